-- Written by scripts/freeze_sql.py --restore for revision 0014_large_rings. Do not edit.

-- ==== sql/functions/rate_limit.sql (as frozen by 0013_scale_speed) ====
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
-- last window_minutes. State: smsao.rate_limit_keys, one row per (caller, operation), and a
-- ring of the key's newest attempts, numbered 1, 2, 3... (sql/schema/40_hardening.sql,
-- 60_scale.sql). The max_attempts-th newest attempt decides: the call is refused when it
-- was admitted inside the window.
--   1. An admission is one conditional UPDATE of the key row. For limits up to 100 the ring
--      is an array on that row, so the UPDATE both decides and records: it overwrites the
--      slot of the attempt that decides it (the max_attempts-th newest), and the row lock
--      serialises concurrent admissions: a call that waited re-checks its WHERE against the
--      newest version of the row (READ COMMITTED's re-check), so no more than max_attempts
--      are ever admitted in a window, and the stamp is taken after the wait.
--      Larger limits (up to 10,000) keep their ring in smsao.rate_limit_hits: the UPDATE of
--      the key row decides (reading the deciding attempt), then one ring row is written (an
--      insert until the ring has wrapped, an update after); the key row's lock serialises
--      them the same way.
--   2. Refusals write nothing: when the UPDATE matched no row, one look at the committed
--      state says why (no key yet, a ring smaller than this limit, or full). A refusal
--      records at most one function_call_audit row per key, operation and window
--      (smsao.record_rate_limit_denial).
-- No advisory lock. Every lookup is by full primary key, so no plan depends on the tables'
-- statistics (they are stale after a crash empties the UNLOGGED tables, or after pruning).
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
  inline   boolean := max_attempts <= 100;   -- try the ring on the key row first
  uid      uuid;
  seen     bigint;                           -- the key's newest attempt number
  kept     integer;                          -- the key's ring size
  on_row   boolean;
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
  -- smsao.request_uid() inline: its call (settings pinned, exception block) costs as much
  -- as the admission's own statement. Callers without a user id: smsao.rate_limit_key().
  begin
    uid := coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                    nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid;
  exception when invalid_text_representation then
    uid := null;
  end;
  key := case when uid is not null then 'user:' || uid::text else smsao.rate_limit_key() end;
  if key like 'ip:%' and (max_attempts > 100 or window_minutes > 60) then
    raise exception 'max_attempts must be at most 100 and window_minutes at most 60 for anonymous callers, got % and %',
      max_attempts, window_minutes using errcode = '22023';
  end if;

  -- (A round ends without an answer only when the key changed shape under the call: it was
  -- created, pruned or its ring grew. A few rounds always suffice.)
  for round in 1..5 loop
    -- 1. Admit: one row write. clock_timestamp() is read when the row lock is held.
    if inline then
      update smsao.rate_limit_keys k
         set ring[k.admitted % k.ring_size + 1] = pg_catalog.clock_timestamp(),
             admitted = k.admitted + 1,
             retain_window = greatest(k.retain_window, win),
             window_ends = greatest(k.window_ends,
                                    pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
       where k.caller_key = key and k.operation_type = op
         and k.ring is not null and k.ring_size >= max_attempts
         and (k.admitted < max_attempts
              or coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity')
                 <= pg_catalog.clock_timestamp() - win);
      if found then
        return true;
      end if;
    else
      -- The deciding attempt is read with the statement's snapshot: after a wait for the row
      -- lock it may not see an attempt committed meanwhile, and then it does not admit (the
      -- look below, with a new snapshot, sends the call round again).
      update smsao.rate_limit_keys k
         set admitted = k.admitted + 1,
             retain_window = greatest(k.retain_window, win),
             window_ends = greatest(k.window_ends,
                                    pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
       where k.caller_key = key and k.operation_type = op
         and k.ring is null and k.ring_size >= max_attempts
         and (k.admitted < max_attempts
              or (select h.at from smsao.rate_limit_hits h
                   where h.caller_key = key and h.operation_type = op
                     and h.slot = ((k.admitted - max_attempts + 1) % k.ring_size)::integer
                     and h.seq = k.admitted - max_attempts + 1) <= pg_catalog.clock_timestamp() - win)
      returning k.admitted, k.ring_size into seen, kept;
      if found then
        -- Attempts max(1, n - size + 1) .. n each have their row (smsao.grow_rate_limit_ring
        -- keeps that too), so attempt `seen`'s slot holds an older attempt's row only once the
        -- ring has wrapped: a plain insert before, a plain update after.
        if seen <= kept then
          insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at)
          values (key, op, (seen % kept)::integer, seen, pg_catalog.clock_timestamp());
        else
          update smsao.rate_limit_hits h set seq = seen, at = pg_catalog.clock_timestamp()
           where h.caller_key = key and h.operation_type = op and h.slot = (seen % kept)::integer;
        end if;
        return true;
      end if;
    end if;

    -- 2. Not admitted: why? Committed state, no lock.
    select k.admitted, k.ring_size, k.ring is not null, k.denied_at,
           case when k.admitted < max_attempts or k.ring_size < max_attempts then null
                when k.ring is not null
                then coalesce(k.ring[(k.admitted - max_attempts) % k.ring_size + 1], '-infinity')
                else (select h.at from smsao.rate_limit_hits h
                       where h.caller_key = key and h.operation_type = op
                         and h.slot = ((k.admitted - max_attempts + 1) % k.ring_size)::integer
                         and h.seq = k.admitted - max_attempts + 1) end
      into seen, kept, on_row, denied, deciding
      from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op;
    if seen is null then
      -- A new key: its first attempt.
      insert into smsao.rate_limit_keys as k
        (caller_key, operation_type, admitted, ring_size, retain_window, window_ends, ring)
      values (key, op, 1, max_attempts, win, pg_catalog.clock_timestamp() + win,
              case when max_attempts <= 100 then array[pg_catalog.clock_timestamp()] end)
      on conflict on constraint rate_limit_keys_pkey do nothing;
      if found then
        if max_attempts > 100 then
          insert into smsao.rate_limit_hits as h (caller_key, operation_type, slot, seq, at)
          values (key, op, (1 % max_attempts)::integer, 1, pg_catalog.clock_timestamp())
          on conflict on constraint rate_limit_hits_pkey do update set seq = excluded.seq, at = excluded.at;
        end if;
        return true;
      end if;
      continue;
    end if;
    if max_attempts > kept or (on_row and max_attempts > 100) then
      perform smsao.grow_rate_limit_ring(key, op, max_attempts);
      inline := max_attempts <= 100;
      continue;
    end if;
    if deciding > pg_catalog.clock_timestamp() - win then
      if denied is null or denied <= pg_catalog.clock_timestamp() - win then
        perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
      end if;
      return false;
    end if;
    inline := on_row;   -- admissible now (the window slid, or the key changed): again
  end loop;
  raise exception 'rate limit state of % changed under the call five times: retry', op
    using errcode = '40001';
end
$$;
revoke all on function public.enhanced_security_rate_limit(text, integer, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.enhanced_security_rate_limit(text, integer, integer)
  to anon, authenticated, service_role;

-- A call with a larger limit than the key's ring: the ring grows to it, under the key row's
-- lock (which every admission of the key takes too). Up to 100 attempts the ring stays on
-- the key row; past that it moves to smsao.rate_limit_hits (slot seq % size). Attempts the
-- old ring had already dropped are kept as '-infinity' (outside every window), so that every
-- attempt number in the new ring has its entry: the deciding look of a large ring never
-- finds a gap.
create or replace function smsao.grow_rate_limit_ring(key text, op text, new_size integer) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  n      bigint;
  size   integer;
  stamps timestamptz[];
  grown  timestamptz[];
  seqs   bigint[];
  ats    timestamptz[];
begin
  select k.admitted, k.ring_size, k.ring into n, size, stamps
    from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op
  for update;
  if not found or size >= new_size then
    return;   -- pruned, or grown by another call meanwhile
  end if;
  if stamps is not null and new_size <= 100 then
    -- On the row: attempt j moves from slot (j - 1) % size + 1 to (j - 1) % new_size + 1.
    select pg_catalog.array_agg(case when j > n - size then stamps[((j - 1) % size + 1)::integer]
                                     else '-infinity'::timestamptz end order by (j - 1) % new_size)
      into grown
      from pg_catalog.generate_series(greatest(n - new_size + 1, 1), n) j;
    update smsao.rate_limit_keys k set ring = grown, ring_size = new_size
     where k.caller_key = key and k.operation_type = op;
    return;
  end if;
  if stamps is not null then
    seqs := array(select j from pg_catalog.generate_series(greatest(n - size + 1, 1), n) j);
    ats := array(select stamps[((j - 1) % size + 1)::integer] from pg_catalog.unnest(seqs) j);
  else
    with moved as (
      delete from smsao.rate_limit_hits h where h.caller_key = key and h.operation_type = op
      returning h.seq, h.at
    )
    select pg_catalog.array_agg(m.seq), pg_catalog.array_agg(m.at) into seqs, ats from moved m;
  end if;
  -- (A multi-argument unnest is FROM-clause syntax, not a pg_catalog function.)
  insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at)
  select key, op, (j % new_size)::integer, j, coalesce(m.at, '-infinity')
    from pg_catalog.generate_series(greatest(n - new_size + 1, 1), n) j
    left join unnest(seqs, ats) as m(seq, at) on m.seq = j;
  update smsao.rate_limit_keys k set ring = null, ring_size = new_size
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
