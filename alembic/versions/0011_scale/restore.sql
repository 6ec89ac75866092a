-- Written by scripts/freeze_sql.py --restore for revision 0011_scale. Do not edit.

-- ==== sql/functions/credit_ledger.sql (as frozen by 0005_hardening) ====
-- profiles.credits is the running sum of credit_transactions, whoever writes first:
--  * ledger rows move the balances (apply_credit_transaction);
--  * a trusted writer (service_role, DBA, loader) that sets profiles.credits directly
--    gets the difference recorded as an 'adjustment' ledger row (record_credit_adjustment).
-- Both are statement-level with transition tables: a statement of 100,000 ledger rows is
-- one UPDATE of the balances it moves, not 100,000 (each of which would run the profiles'
-- statement triggers again).
-- A transaction-local marker tells each trigger that the other one is the writer, so
-- the amount is applied once. It counts only inside a nested trigger (depth > 1): any
-- session may set a custom setting, and a marker set by hand before a plain statement
-- would otherwise skip a balance change or its ledger row.
-- App users hold no privilege on credits or the ledger.

create or replace function smsao.apply_credit_transaction() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'profile' then
    return null;  -- the profile rows already carry these amounts
  end if;
  -- Lock the balances in user order first, so two multi-user statements never deadlock.
  perform from public.profiles p
  where p.user_id in (select n.user_id from new_entries n)
  order by p.user_id for no key update;
  perform pg_catalog.set_config('smsao.credit_writer', 'ledger', true);
  update public.profiles p set credits = p.credits + d.delta
  from (select n.user_id, sum(n.amount) as delta from new_entries n group by n.user_id) d
  where p.user_id = d.user_id and d.delta <> 0;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.apply_credit_transaction() from public, anon, authenticated, service_role;

-- Balances set directly: one ledger row per changed balance. One function per event, as
-- each sees only its own transition tables.
create or replace function smsao.record_credit_adjustment() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'ledger' then
    return null;
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'profile', true);
  insert into public.credit_transactions (user_id, amount, kind)
  select n.user_id, n.credits - o.credits, 'adjustment'
  from old_profiles o join new_profiles n on n.user_id = o.user_id
  where n.credits <> o.credits;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.record_credit_adjustment() from public, anon, authenticated, service_role;

create or replace function smsao.record_initial_credits() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'ledger' then
    return null;
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'profile', true);
  insert into public.credit_transactions (user_id, amount, kind)
  select n.user_id, n.credits, 'adjustment' from new_profiles n where n.credits <> 0;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.record_initial_credits() from public, anon, authenticated, service_role;


-- ==== sql/functions/rate_limit.sql (as frozen by 0005_hardening) ====
-- The rate-limit key of the caller: the user id, the login of a trusted backend session,
-- or for anon the first address of x-forwarded-for (the client, as the proxy saw it).
create or replace function smsao.rate_limit_key() returns text
  language plpgsql stable
  set search_path = ''
as $$
declare
  uid uuid := smsao.request_uid();   -- smsao.caller_id(), without its auth.uid() call
  forwarded text;
begin
  if uid is not null then
    return 'user:' || uid::text;
  end if;
  if smsao.caller_role() = 'service_role' then
    return 'service:' || session_user;
  end if;
  begin
    forwarded := nullif(pg_catalog.current_setting('request.headers', true), '')::jsonb ->> 'x-forwarded-for';
  exception when invalid_text_representation then
    forwarded := null;
  end;
  return 'ip:' || coalesce(nullif(pg_catalog.btrim(pg_catalog.split_part(forwarded, ',', 1)), ''), 'unknown');
end
$$;
revoke all on function smsao.rate_limit_key() from public, anon, authenticated, service_role;

-- Exact sliding window: admits when fewer than max_attempts attempts were admitted in the
-- last window_minutes. State: smsao.rate_limit_keys and the ring of each key's newest
-- attempts in smsao.rate_limit_hits (sql/schema/40_hardening.sql). The max_attempts-th
-- newest attempt decides: the call is refused when it was admitted inside the window.
--   1. Refusals are decided from committed state, with no lock and no write: admitted
--      attempts stay admitted, so a key seen full is full now. A refusal records at most one
--      function_call_audit row per key, operation and window (smsao.record_rate_limit_denial).
--   2. Admissions take the key's transaction-level advisory lock and record the attempt only
--      if no other call was admitted since step 1 (else they look again, under the lock):
--      concurrent calls never admit more than the limit, and an attempt is stamped when it is
--      admitted, not when the call started (a call that queued records when it got through).
-- Every lookup is by full primary key, so no plan depends on the tables' statistics (they
-- are stale after a crash empties the UNLOGGED tables, or after a night's pruning).
-- A key keeps the attempts of its largest limit and longest window: a later call with a
-- larger limit or a longer window than ever before cannot see attempts already dropped
-- (limits are per operation in practice, smsao.operation_limits).
-- anon callers are keyed by a header anyone can forge, so they may use windows of at most
-- 60 minutes and at most 100 attempts: their state never outlives an hour.
create or replace function public.enhanced_security_rate_limit(
  operation_type text,
  max_attempts integer default 5,
  window_minutes integer default 15
) returns boolean
  language plpgsql security definer
  set search_path = ''
as $$
declare
  win      interval;
  -- PL/pgSQL gives text variables and arguments the caller's collation; the statement guard
  -- calls in with "C" (from tg_table_name, of type name), and a "C" comparison cannot use the
  -- primary key (default collation): every lookup below would scan the whole table.
  key      text collate "default";
  op       text collate "default" := operation_type;
  seen     bigint;
  ring     integer;
  denied   timestamptz;
  deciding timestamptz;
begin
  if operation_type is null or operation_type !~ '^[a-z][a-z0-9_]{0,62}$' then
    raise exception 'operation_type must be a lowercase identifier such as ''admin_access'', got %',
      coalesce(pg_catalog.quote_literal(operation_type), 'NULL') using errcode = '22023';
  end if;
  if max_attempts is null or max_attempts not between 1 and 10000 then
    raise exception 'max_attempts must be between 1 and 10000, got %', coalesce(max_attempts::text, 'NULL')
      using errcode = '22023';
  end if;
  if window_minutes is null or window_minutes not between 1 and 10080 then
    raise exception 'window_minutes must be between 1 and 10080 (one week), got %',
      coalesce(window_minutes::text, 'NULL') using errcode = '22023';
  end if;

  win := pg_catalog.make_interval(mins => window_minutes);
  key := smsao.rate_limit_key();
  if key like 'ip:%' and (max_attempts > 100 or window_minutes > 60) then
    raise exception 'max_attempts must be at most 100 and window_minutes at most 60 for anonymous callers, got % and %',
      max_attempts, window_minutes using errcode = '22023';
  end if;

  -- 1. Full already? Committed state, no lock: admitted attempts stay admitted, so a key
  --    seen full is full now. Every lookup is by full primary key.
  -- (A second round runs under the lock and settles it, but for a concurrent prune of the
  -- key or the growth of its ring: a few rounds always suffice.)
  for round in 1..5 loop
    select k.admitted, k.ring_size, k.denied_at into seen, ring, denied
      from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op;
    deciding := null;
    if seen >= max_attempts and ring >= max_attempts then
      select h.at into deciding from smsao.rate_limit_hits h
       where h.caller_key = key and h.operation_type = op
         and h.slot = ((seen - max_attempts + 1) % ring)::integer and h.seq = seen - max_attempts + 1;
    end if;
    if deciding > pg_catalog.clock_timestamp() - win then
      if denied is null or denied <= pg_catalog.clock_timestamp() - win then
        perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
      end if;
      return false;
    end if;

    -- 2. Admit under the key's lock, unless another call was admitted since step 1 (then
    --    look again: the lock is held now, so the next look is final). The attempt is
    --    stamped here, after the lock was granted.
    perform pg_catalog.pg_advisory_xact_lock(7411222, pg_catalog.hashtext(key || '|' || op));
    if seen is null then
      insert into smsao.rate_limit_keys as k
        (caller_key, operation_type, admitted, ring_size, retain_window, window_ends)
      values (key, op, 1, max_attempts, win, pg_catalog.clock_timestamp() + win)
      on conflict on constraint rate_limit_keys_pkey do nothing;
      if found then
        insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, seq, at)
        values (key, op, (1 % max_attempts)::integer, 1, pg_catalog.clock_timestamp())
        on conflict on constraint rate_limit_hits_pkey do update set seq = excluded.seq, at = excluded.at;
        return true;
      end if;
    elsif max_attempts > ring then
      perform smsao.grow_rate_limit_ring(key, op, max_attempts);
    else
      with k as (
        update smsao.rate_limit_keys k
           set admitted = k.admitted + 1,
               retain_window = greatest(k.retain_window, win),
               window_ends = greatest(k.window_ends, pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
         where k.caller_key = key and k.operation_type = op and k.admitted = seen
        returning k.admitted
      )
      insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, seq, at)
      select key, op, (k.admitted % ring)::integer, k.admitted, pg_catalog.clock_timestamp() from k
      on conflict on constraint rate_limit_hits_pkey do update set seq = excluded.seq, at = excluded.at;
      if found then
        return true;
      end if;
    end if;
  end loop;
  raise exception 'rate limit state of % changed under its lock five times: retry', op
    using errcode = '40001';
end
$$;
revoke all on function public.enhanced_security_rate_limit(text, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.enhanced_security_rate_limit(text, integer, integer)
  to anon, authenticated, service_role;

-- A call with a larger limit than the key's ring: the ring grows to it, for a caller that
-- holds the key's advisory lock. The attempts kept move to their slot in the larger ring.
create or replace function smsao.grow_rate_limit_ring(key text, op text, new_size integer) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  seqs bigint[];
  stamps timestamptz[];
begin
  with moved as (
    delete from smsao.rate_limit_hits h where h.caller_key = key and h.operation_type = op
    returning h.seq, h.at
  )
  select pg_catalog.array_agg(m.seq), pg_catalog.array_agg(m.at) into seqs, stamps from moved m;
  insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at)
  select key, op, (m.seq % new_size)::integer, m.seq, m.at from unnest(seqs, stamps) as m(seq, at);
  update smsao.rate_limit_keys k set ring_size = new_size
  where k.caller_key = key and k.operation_type = op;
end
$$;
revoke all on function smsao.grow_rate_limit_ring(text, text, integer) from public, anon, authenticated, service_role;

-- A refusal: counted nowhere in the key's state, and written to function_call_audit only
-- when it is the key's first refusal within its window, so a flood of refused calls
-- writes one row per key, operation and window, not one per call.
create or replace function smsao.record_rate_limit_denial(key text, op text, max_attempts integer,
                                                         window_minutes integer)
  returns void
  language plpgsql
  set search_path = ''
as $$
declare
  now_ timestamptz := pg_catalog.clock_timestamp();
begin
  update smsao.rate_limit_keys k set denied_at = now_
  where k.caller_key = key and k.operation_type = op
    and (k.denied_at is null or k.denied_at <= now_ - pg_catalog.make_interval(mins => window_minutes));
  if found then
    perform smsao.audit_call('enhanced_security_rate_limit',
      pg_catalog.jsonb_build_object('operation_type', op, 'max_attempts', max_attempts,
                                    'window_minutes', window_minutes, 'caller_key', key,
                                    'first_refusal_in_window', true),
      'rate_limited', now_);
  end if;
end
$$;
revoke all on function smsao.record_rate_limit_denial(text, text, integer, integer)
  from public, anon, authenticated, service_role;

-- Rate-limit state past its window, at most `max_keys` keys per call (each with its
-- attempts). Run every minute by the performance job and daily by the housekeeping job.
create or replace function smsao.prune_rate_limit_state(max_keys integer default 50000) returns integer
  language plpgsql
  set search_path = ''
as $$
declare
  pruned integer;
begin
  with gone as (
    delete from smsao.rate_limit_keys k
    where k.ctid = any (array(select x.ctid from smsao.rate_limit_keys x
                              where x.window_ends < pg_catalog.clock_timestamp()
                              limit max_keys))
      and k.window_ends < pg_catalog.clock_timestamp()
    returning k.caller_key, k.operation_type
  ), hits as (
    delete from smsao.rate_limit_hits h using gone g
    where h.caller_key = g.caller_key and h.operation_type = g.operation_type
  )
  select pg_catalog.count(*)::integer into pruned from gone;
  return pruned;
end
$$;
revoke all on function smsao.prune_rate_limit_state(integer) from public, anon, authenticated, service_role;


-- ==== sql/triggers/identity.sql (as frozen by 0005_hardening) ====
create or replace trigger smsao_on_auth_user_created
  after insert on auth.users referencing new table as new_users
  for each statement execute function smsao.handle_new_user();

create or replace trigger profiles_touch_updated_at
  before update on public.profiles
  for each row execute function smsao.touch_updated_at();

