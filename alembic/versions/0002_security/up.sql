-- Frozen by scripts/freeze_sql.py for revision 0002_security. Do not edit.

-- ==== sql/schema/20_security.sql ====
-- Rate-limit state: one row per (caller, operation) holding the admitted attempts still
-- inside the window, so an exact sliding window costs one row lock per admitted call.
-- UNLOGGED: it is hot, and losing it in a crash only forgets recent attempts.
-- fillfactor leaves room for HOT updates (no indexed column changes).
create unlogged table smsao.rate_limit_windows (
  caller_key     text not null,
  operation_type text not null,
  hits           timestamptz[] not null,
  admitted       boolean not null default true,
  -- Past this instant every hit has left its window: the row can be pruned.
  window_ends    timestamptz not null,
  -- The longest window any call on this key has used: hits are kept that long, so a call
  -- with a shorter window than an earlier one stays exact (a longer one than ever before
  -- cannot see attempts already dropped). At most the newest 10,000 (the largest
  -- max_attempts) are kept: no decision needs more. With one window per operation, as
  -- smsao.operation_limits has, the array never holds more than that limit.
  retain_window  interval not null,
  primary key (caller_key, operation_type)
) with (fillfactor = 70);
-- Past ~250 hits (a limit above the contract's 60) the array is TOASTed and rewritten on
-- every admitted call; compressing timestamps gains little and cost over a quarter of it
-- (bench/rate_limit_bench.py, (d*) rows).
alter table smsao.rate_limit_windows alter column hits set storage external;

-- Rate limits of the critical operations (CONTRACT section 3). A table, so an operator
-- can tighten a limit without a migration.
create table smsao.operation_limits (
  operation_type text primary key,
  max_attempts   integer not null check (max_attempts between 1 and 10000),
  window_minutes integer not null check (window_minutes between 1 and 10080)
);
insert into smsao.operation_limits values
  ('financial_transaction', 5, 60),
  ('admin_access', 60, 1),
  ('profile_update', 10, 1),
  ('contact_operation', 60, 1);

-- ==== sql/functions/audit_call.sql ====
-- The caller's user id, exactly what smsao.caller_id() returns (auth.uid(); NULL when the
-- subject is absent or not a uuid), read from the request settings the way auth.uid() reads
-- them. For the hot paths (rate limit, audit): on PostgreSQL 15 a call to a SQL function that
-- cannot be inlined (the auth.* shim pins search_path) is parsed and planned again in every
-- request, which cost the rate limiter a fifth of its time (bench/rate_limit_bench.py).
create function smsao.request_uid() returns uuid
  language plpgsql stable
  set search_path = ''
as $$
begin
  return coalesce(nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
                  nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid;
exception when invalid_text_representation then
  return null;
end
$$;
revoke all on function smsao.request_uid() from public;

-- Writes one function_call_audit row for the current caller. Argument values under
-- keys that name secrets are replaced, so codes and tokens never reach the audit.
-- PL/pgSQL rather than SQL: its INSERT is planned once per session, not once per call.
create function smsao.audit_call(
  function_name text, arguments jsonb, outcome text, started_at timestamptz
) returns void
  language plpgsql security definer
  set search_path = ''
as $$
begin
  insert into public.function_call_audit (caller_id, caller_role, function_name, arguments, outcome, duration_ms)
  values (
    smsao.request_uid(),
    smsao.caller_role(),
    audit_call.function_name,
    coalesce((
      select pg_catalog.jsonb_object_agg(a.key,
               case when a.key ~* '(password|secret|token|code|otp|api_?key|credential)'
                    then '"[redacted]"'::jsonb else a.value end)
      from pg_catalog.jsonb_each(audit_call.arguments) a), '{}'::jsonb),
    audit_call.outcome,
    extract(epoch from pg_catalog.clock_timestamp() - audit_call.started_at) * 1000
  );
end
$$;
revoke all on function smsao.audit_call(text, jsonb, text, timestamptz) from public;

-- The one way a critical operation refuses: the audit row it writes rolls back with the
-- error, so the refusal also goes to the server log, which survives the rollback.
create function smsao.refuse(
  function_name text, arguments jsonb, outcome text, errcode text, message text
) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  raise log 'smsao refusal: %', pg_catalog.jsonb_build_object(
    'function', function_name, 'outcome', outcome, 'caller_id', smsao.caller_id(),
    'caller_role', smsao.caller_role(), 'arguments', arguments, 'message', message);
  raise exception using errcode = refuse.errcode, message = refuse.message;
end
$$;
revoke all on function smsao.refuse(text, jsonb, text, text, text) from public;

-- ==== sql/functions/rate_limit.sql ====
-- The rate-limit key of the caller: the user id, or for anon the first address of
-- x-forwarded-for (the client, as the proxy saw it).
create function smsao.rate_limit_key() returns text
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
revoke all on function smsao.rate_limit_key() from public;

-- Exact sliding window: admits when fewer than max_attempts attempts were admitted in the
-- last window_minutes. A refusal counts nothing and is recorded in function_call_audit as
-- 'rate_limited'. Two steps, both measured (bench/rate_limit_bench.py):
--   1. A key already full is refused from committed state, with no lock and no write:
--      admitted hits stay admitted, so a key seen full is full now. Refusals on a hot key
--      therefore never queue on its row lock (they used to: 0.3x of the floor, now above it).
--   2. Otherwise one upsert: ON CONFLICT locks the caller's row and recomputes from its latest
--      version, so concurrent calls never admit more than the limit (it may still refuse, if
--      the key filled up meanwhile). Under contention this beats UPDATE ... WHERE <room>,
--      whose EvalPlanQual recheck evaluates the window twice.
create function public.enhanced_security_rate_limit(
  operation_type text,
  max_attempts integer default 5,
  window_minutes integer default 15
) returns boolean
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started  timestamptz := pg_catalog.clock_timestamp();
  win      interval;
  -- PL/pgSQL gives text variables and arguments the caller's collation; the statement guard
  -- calls in with "C" (from tg_table_name, of type name), and a "C" comparison cannot use the
  -- primary key (default collation): every lookup below would scan the whole table.
  key      text collate "default";
  op       text collate "default" := operation_type;
  ok       boolean;
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

  if exists (
    select from smsao.rate_limit_windows w
     where w.caller_key = key and w.operation_type = op
       and pg_catalog.cardinality(w.hits) >= max_attempts   -- cheap test first
       and (select pg_catalog.count(*) from pg_catalog.unnest(w.hits) as h where h > started - win) >= max_attempts
  ) then
    ok := false;
  else
    insert into smsao.rate_limit_windows as w
      (caller_key, operation_type, hits, window_ends, retain_window)
    values (key, op, array[started], started + win, win)
    on conflict on constraint rate_limit_windows_pkey do update
      set (hits, admitted) = (
            -- keep the newest 10,000 hits (one fewer when this call takes a place)
            select case when r.in_window < max_attempts
                        then r.sorted[greatest(r.n - 10000 + 2, 1):] || started
                        else r.sorted[greatest(r.n - 10000 + 1, 1):] end,
                   r.in_window < max_attempts
            from (select pg_catalog.count(*) filter (where h > started - win) as in_window,
                         pg_catalog.count(*)::integer as n,
                         coalesce(pg_catalog.array_agg(h order by h), '{}') as sorted
                  from pg_catalog.unnest(w.hits) as h
                  where h > started - greatest(w.retain_window, win)) r),
          window_ends = greatest(w.window_ends, started + greatest(w.retain_window, win)),
          retain_window = greatest(w.retain_window, win)
    returning w.admitted into ok;
  end if;

  if not ok then
    perform smsao.audit_call('enhanced_security_rate_limit',
      pg_catalog.jsonb_build_object('operation_type', operation_type, 'max_attempts', max_attempts,
                                    'window_minutes', window_minutes, 'caller_key', key),
      'rate_limited', started);
  end if;
  return ok;
end
$$;
revoke all on function public.enhanced_security_rate_limit(text, integer, integer) from public;
grant execute on function public.enhanced_security_rate_limit(text, integer, integer)
  to anon, authenticated, service_role;

-- Rate-limit state past its window (run by the daily housekeeping job).
create function smsao.prune_rate_limit_state() returns integer
  language sql
  set search_path = ''
as $$
  with gone as (
    delete from smsao.rate_limit_windows where window_ends < pg_catalog.clock_timestamp() returning 1
  )
  select pg_catalog.count(*)::integer from gone
$$;
revoke all on function smsao.prune_rate_limit_state() from public;

-- ==== sql/functions/validate_user_session.sql ====
-- True only for service_role, or for an authenticated caller whose profile is active,
-- whose JWT has not expired (when it carries exp) and whose session_id (when present)
-- is an unexpired auth.sessions row of that same user. Never an error.
create function public.validate_user_session() returns boolean
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  claims jsonb;
  uid    uuid;
  exp    numeric;
  sid    uuid;
begin
  case smsao.caller_role()
    when 'service_role' then return true;
    when 'authenticated' then null;
    else return false;
  end case;

  -- auth.jwt(), read the way it reads it: the shim's SQL function cannot be inlined (it pins
  -- search_path), so calling it costs a parse and plan per request (bench/rate_limit_bench.py).
  claims := coalesce(coalesce(nullif(pg_catalog.current_setting('request.jwt.claim', true), ''),
                              nullif(pg_catalog.current_setting('request.jwt.claims', true), ''))::jsonb,
                     '{}'::jsonb);
  uid := (claims ->> 'sub')::uuid;
  if uid is null then
    return false;
  end if;
  if claims ? 'exp' then
    exp := (claims ->> 'exp')::numeric;
    if exp is null or exp <= extract(epoch from pg_catalog.now()) then
      return false;
    end if;
  end if;
  if claims ? 'session_id' then
    sid := (claims ->> 'session_id')::uuid;
    if not exists (
      select from auth.sessions s
      where s.id = sid and s.user_id = uid
        and (s.not_after is null or s.not_after > pg_catalog.now())
    ) then
      return false;
    end if;
  end if;
  return exists (select from public.profiles p where p.user_id = uid and p.status = 'active');
exception
  -- Malformed claims (a sub or session_id that is not a uuid, an exp that is not a number).
  when invalid_text_representation or invalid_parameter_value or numeric_value_out_of_range then
    return false;
end
$$;
revoke all on function public.validate_user_session() from public;
grant execute on function public.validate_user_session() to anon, authenticated, service_role;

-- The gate of every critical operation: a valid session, then the operation's rate limit.
-- SECURITY DEFINER: the contacts and profiles triggers call it with the app user's rights.
create function smsao.guard_critical(function_name text, operation_type text, arguments jsonb)
  returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  lim smsao.operation_limits;
begin
  if not public.validate_user_session() then
    perform smsao.refuse(function_name, arguments, 'denied', '42501',
      'invalid session: sign in again (the account must be active and the token unexpired)');
  end if;
  select * into strict lim from smsao.operation_limits l where l.operation_type = guard_critical.operation_type;
  if not public.enhanced_security_rate_limit(operation_type, lim.max_attempts, lim.window_minutes) then
    perform smsao.refuse(function_name, arguments, 'rate_limited', 'PT429',
      pg_catalog.format('rate limit exceeded for %s: at most %s per %s minute(s), try again later',
                        operation_type, lim.max_attempts, lim.window_minutes));
  end if;
end
$$;
revoke all on function smsao.guard_critical(text, text, jsonb) from public;
-- The statement triggers on contacts and profiles call it with the app user's rights.
grant execute on function smsao.guard_critical(text, text, jsonb) to anon, authenticated;

-- ==== sql/functions/credit_requests.sql ====
-- Credits are money: requests are created and decided only here, each call gated
-- (session, rate limit) and audited.

create function public.request_credits(amount integer) returns uuid
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('amount', amount);
  uid     uuid := smsao.caller_id();
  new_id  uuid;
begin
  -- Arguments first: a malformed call writes nothing, not even a rate-limit attempt.
  if amount is null or amount not between 1 and 1000000 then
    raise exception 'amount must be between 1 and 1000000 credits, got %', coalesce(amount::text, 'NULL')
      using errcode = '22023';
  end if;
  if uid is null then
    perform smsao.refuse('request_credits', args, 'denied', '42501',
      'request_credits is for signed-in users: call it with a user''s token');
  end if;
  perform smsao.guard_critical('request_credits', 'financial_transaction', args);

  insert into public.credit_requests (user_id, amount) values (uid, amount) returning id into new_id;
  perform smsao.audit_call('request_credits', args || pg_catalog.jsonb_build_object('request_id', new_id), 'ok', started);
  return new_id;
end
$$;
revoke all on function public.request_credits(integer) from public;
grant execute on function public.request_credits(integer) to authenticated;

-- Moves a pending request to `decision`, or raises: 22023 unknown request, 55000 already
-- decided. The row lock taken by the UPDATE serialises concurrent deciders; the loser
-- finds the request no longer pending.
create function smsao.decide_credit_request(request_id uuid, decision text, reason text)
  returns public.credit_requests
  language plpgsql
  set search_path = ''
as $$
declare
  decided public.credit_requests;
  current_status text;
begin
  update public.credit_requests r
  set status = decision, reason = coalesce(decide_credit_request.reason, r.reason),
      processed_at = pg_catalog.now(), processed_by = smsao.caller_id()
  where r.id = request_id and r.status = 'pending'
  returning r.* into decided;
  if found then
    return decided;
  end if;
  select r.status into current_status from public.credit_requests r where r.id = request_id;
  if current_status is null then
    raise exception 'request_id: no credit request %', request_id using errcode = '22023';
  end if;
  raise exception 'credit request % is already %', request_id, current_status
    using errcode = '55000', hint = 'only pending requests can be approved or rejected';
end
$$;
revoke all on function smsao.decide_credit_request(uuid, text, text) from public;

-- The admin gate: a valid session as an active admin (or the trusted backend), then
-- the admin_access rate limit.
create function smsao.guard_admin(function_name text, arguments jsonb) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.guard_critical(function_name, 'admin_access', arguments);
  if smsao.caller_role() <> 'service_role' and not smsao.is_admin() then
    perform smsao.refuse(function_name, arguments, 'denied', '42501',
      function_name || ' is for admins only');
  end if;
end
$$;
revoke all on function smsao.guard_admin(text, jsonb) from public;

create function public.approve_credit_request(request_id uuid) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('request_id', request_id);
  req     public.credit_requests;
  credits_before integer;
begin
  if request_id is null then
    raise exception 'request_id must not be NULL' using errcode = '22023';
  end if;
  perform smsao.guard_admin('approve_credit_request', args);

  req := smsao.decide_credit_request(request_id, 'approved', null);
  select p.credits into credits_before from public.profiles p where p.user_id = req.user_id;
  -- credit_request_id is unique: the credits of one request enter the ledger once.
  insert into public.credit_transactions (user_id, amount, kind, credit_request_id)
  values (req.user_id, req.amount, 'credit_request', req.id);

  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'approve_credit_request', 'credit_requests', req.id::text,
          pg_catalog.jsonb_build_object('status', 'pending', 'credits', credits_before),
          pg_catalog.jsonb_build_object('status', 'approved', 'credits', credits_before + req.amount,
                                        'user_id', req.user_id, 'amount', req.amount));
  perform smsao.audit_call('approve_credit_request', args, 'ok', started);
end
$$;
revoke all on function public.approve_credit_request(uuid) from public;
grant execute on function public.approve_credit_request(uuid) to authenticated, service_role;

create function public.reject_credit_request(request_id uuid, reason text) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('request_id', request_id, 'reason', reason);
  req     public.credit_requests;
begin
  if request_id is null then
    raise exception 'request_id must not be NULL' using errcode = '22023';
  end if;
  if reason is null or pg_catalog.btrim(reason) = '' or pg_catalog.length(reason) > 500 then
    raise exception 'reason must be a non-empty text of at most 500 characters' using errcode = '22023';
  end if;
  perform smsao.guard_admin('reject_credit_request', args);

  req := smsao.decide_credit_request(request_id, 'rejected', pg_catalog.btrim(reason));
  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'reject_credit_request', 'credit_requests', req.id::text,
          pg_catalog.jsonb_build_object('status', 'pending'),
          pg_catalog.jsonb_build_object('status', 'rejected', 'reason', req.reason));
  perform smsao.audit_call('reject_credit_request', args, 'ok', started);
end
$$;
revoke all on function public.reject_credit_request(uuid, text) from public;
grant execute on function public.reject_credit_request(uuid, text) to authenticated, service_role;

-- ==== sql/functions/admin_users.sql ====
create function public.admin_set_user_status(user_id uuid, status text) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started    timestamptz := pg_catalog.clock_timestamp();
  args       jsonb := pg_catalog.jsonb_build_object('user_id', user_id, 'status', status);
  old_status text;
begin
  if admin_set_user_status.user_id is null then
    raise exception 'user_id must not be NULL' using errcode = '22023';
  end if;
  if admin_set_user_status.status is null
     or admin_set_user_status.status not in ('active', 'suspended', 'pending', 'deleted') then
    raise exception 'status must be one of active, suspended, pending, deleted; got %',
      coalesce(pg_catalog.quote_literal(admin_set_user_status.status), 'NULL') using errcode = '22023';
  end if;
  if admin_set_user_status.user_id = smsao.caller_id() then
    raise exception 'user_id: an admin cannot change their own status' using errcode = '22023';
  end if;
  perform smsao.guard_admin('admin_set_user_status', args);

  select p.status into old_status from public.profiles p
  where p.user_id = admin_set_user_status.user_id for update;
  if not found then
    raise exception 'user_id: no user %', admin_set_user_status.user_id using errcode = '22023';
  end if;
  update public.profiles p set status = admin_set_user_status.status
  where p.user_id = admin_set_user_status.user_id;

  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'admin_set_user_status', 'profiles', admin_set_user_status.user_id::text,
          pg_catalog.jsonb_build_object('status', old_status),
          pg_catalog.jsonb_build_object('status', admin_set_user_status.status));
  perform smsao.audit_call('admin_set_user_status', args, 'ok', started);
end
$$;
revoke all on function public.admin_set_user_status(uuid, text) from public;
grant execute on function public.admin_set_user_status(uuid, text) to authenticated, service_role;

-- A user's details for support, PII included; every call leaves a pii_access_audit row.
create function public.admin_get_user_details(user_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('user_id', user_id);
  details jsonb;
begin
  if admin_get_user_details.user_id is null then
    raise exception 'user_id must not be NULL' using errcode = '22023';
  end if;
  perform smsao.guard_admin('admin_get_user_details', args);

  select pg_catalog.jsonb_build_object(
           'user_id', p.user_id, 'full_name', p.full_name, 'email', p.email, 'phone', p.phone,
           'status', p.status, 'credits', p.credits, 'created_at', p.created_at,
           'roles', (select coalesce(pg_catalog.jsonb_agg(r.role order by r.role), '[]'::jsonb)
                     from public.user_roles r where r.user_id = p.user_id),
           'contacts', (select pg_catalog.count(*) from public.contacts c where c.user_id = p.user_id),
           'campaigns', (select pg_catalog.count(*) from public.campaigns c where c.user_id = p.user_id),
           'pending_credit_requests', (select pg_catalog.count(*) from public.credit_requests c
                                       where c.user_id = p.user_id and c.status = 'pending'))
  into details
  from public.profiles p where p.user_id = admin_get_user_details.user_id;
  if details is null then
    raise exception 'user_id: no user %', admin_get_user_details.user_id using errcode = '22023';
  end if;

  insert into public.pii_access_audit (accessor_id, subject_user_id, table_name, record_id, fields, purpose)
  values (smsao.caller_id(), admin_get_user_details.user_id, 'profiles', admin_get_user_details.user_id::text,
          array['full_name', 'email', 'phone'], 'admin_get_user_details');
  perform smsao.audit_call('admin_get_user_details', args, 'ok', started);
  return details;
end
$$;
revoke all on function public.admin_get_user_details(uuid) from public;
grant execute on function public.admin_get_user_details(uuid) to authenticated, service_role;

-- ==== sql/functions/guard_app_writes.sql ====
-- Statement-level gates on the tables the app writes directly (through RLS): the
-- session must be valid and the operation within its rate limit, counted once per
-- statement (a 5,000-row import is one attempt). Writes made inside SECURITY DEFINER
-- functions or by trusted sessions run as another current_user and pass untouched.
create function smsao.guard_app_write() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  if current_user in ('authenticated', 'anon') then
    perform smsao.guard_critical(tg_table_name || '.' || pg_catalog.lower(tg_op), tg_argv[0],
                                 pg_catalog.jsonb_build_object('table', tg_table_name, 'operation', tg_op));
  end if;
  return null;
end
$$;
revoke all on function smsao.guard_app_write() from public;

-- ==== sql/triggers/guard_app_writes.sql ====
create trigger profiles_guard_update
  before update on public.profiles
  for each statement execute function smsao.guard_app_write('profile_update');

create trigger contacts_guard_write
  before insert or update or delete on public.contacts
  for each statement execute function smsao.guard_app_write('contact_operation');

-- ==== sql/policies/operation_limits.sql ====
-- Internal state (schema smsao, not exposed by PostgREST): only the owner's
-- SECURITY DEFINER functions and a DBA touch it. RLS without policies denies anyone else
-- who might be granted access by mistake.
alter table smsao.operation_limits enable row level security;
revoke all on table smsao.operation_limits from public, anon, authenticated, service_role;

-- ==== sql/policies/rate_limit_windows.sql ====
-- Internal state (schema smsao, not exposed by PostgREST): only the owner's
-- SECURITY DEFINER functions and a DBA touch it. RLS without policies denies anyone else
-- who might be granted access by mistake.
alter table smsao.rate_limit_windows enable row level security;
revoke all on table smsao.rate_limit_windows from public, anon, authenticated, service_role;
