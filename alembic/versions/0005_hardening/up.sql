-- Frozen by scripts/freeze_sql.py for revision 0005_hardening. Do not edit.

-- ==== sql/schema/40_hardening.sql ====
-- Revision 0005_hardening: the rate limiter's state in O(1)-per-call form, and the call
-- counters of the critical operations that survive a rollback.

-- Rate-limit state (replaces smsao.rate_limit_windows, whose array was unnested and sorted
-- on every call). One row per (caller, operation), and a ring of its newest admitted
-- attempts: attempts are numbered 1, 2, 3... per key and attempt n lives in slot
-- n % ring_size, so "the max_attempts-th newest attempt" is one primary-key lookup and an
-- admission overwrites one slot in place. A call admits when that attempt is missing or
-- older than the window: its work does not depend on how many attempts the window holds.
-- UNLOGGED: it is hot, and losing it in a crash only forgets recent attempts.
create unlogged table smsao.rate_limit_keys (
  caller_key     text not null,
  operation_type text not null,
  -- The number of the newest admitted attempt (attempts ever admitted on this key).
  admitted       bigint not null,
  -- Attempts kept: the largest max_attempts used on this key.
  ring_size      integer not null check (ring_size between 1 and 10000),
  -- The longest window used on this key; past window_ends every attempt has left every
  -- window used, and the key (with its ring) can be pruned.
  retain_window  interval not null,
  window_ends    timestamptz not null,
  -- When the last refusal was written to function_call_audit: at most one row per window.
  denied_at      timestamptz,
  primary key (caller_key, operation_type)
) with (fillfactor = 70);  -- room on the page for HOT updates (no indexed column changes)

create unlogged table smsao.rate_limit_hits (
  caller_key     text not null,
  operation_type text not null,
  slot           integer not null,        -- seq % ring_size of the key
  seq            bigint not null,         -- the attempt's number on its key
  at             timestamptz not null,    -- when it was admitted (after the key's lock)
  primary key (caller_key, operation_type, slot)
) with (fillfactor = 70);  -- an admission overwrites its slot: a HOT update
-- No index on window_ends: every admission moves it, and an indexed column would make each
-- admission a non-HOT update with a new index entry. The prune (once a minute) scans instead.

-- Calls, errors and refusals of the critical operations, counted by sequences because a
-- sequence advances even when the transaction that called nextval() rolls back: a refused
-- or failed call raises, and the raise would take any row it wrote with it.
--   smsao.rpc_<name>_calls     every call that reached the operation
--   smsao.rpc_<name>_errors    calls that ended in an error other than a refusal
--   smsao.rpc_<name>_refusals  calls refused: 42501 (denied) or PT429 (rate limited)
-- The names of the operations are the rows of smsao.critical_operations.
-- A crash may advance a sequence by up to 32 (its WAL is written ahead in steps of 32):
-- the figures are counts for monitoring, not for billing.
create table smsao.critical_operations (
  name        text primary key check (name ~ '^[a-z][a-z0-9_]{0,40}$'),
  description text not null
);
insert into smsao.critical_operations (name, description) values
  ('request_credits', 'public.request_credits()'),
  ('approve_credit_request', 'public.approve_credit_request()'),
  ('reject_credit_request', 'public.reject_credit_request()'),
  ('admin_set_user_status', 'public.admin_set_user_status()'),
  ('admin_get_user_details', 'public.admin_get_user_details()'),
  ('admin_list_users', 'public.admin_list_users()'),
  ('profile_update', 'UPDATE of public.profiles by the app (one per statement)'),
  ('contact_operation', 'INSERT/UPDATE/DELETE of public.contacts by the app (one per statement)');

do $$
declare
  op text;
  kind text;
begin
  for op in select c.name from smsao.critical_operations c loop
    foreach kind in array array['calls', 'errors', 'refusals'] loop
      execute pg_catalog.format('create sequence smsao.%I as bigint',
                                'rpc_' || op || '_' || kind);
    end loop;
  end loop;
end
$$;

-- Marks an INSERT statement on contacts whose ON CONFLICT DO UPDATE will fire the UPDATE
-- statement trigger too (PostgreSQL fires both): the gate counts such an upsert once.
-- Written only by the owner's SECURITY DEFINER gate, so an app session cannot forge it
-- the way it could forge a setting; the mark lives from the statement's BEFORE triggers
-- to its AFTER INSERT trigger.
create unlogged table smsao.upsert_marks (
  backend_pid integer not null,
  xact_id     xid8 not null,
  primary key (backend_pid, xact_id)
);

-- ==== sql/functions/admin_users.sql ====
create or replace function public.admin_set_user_status(user_id uuid, status text) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started    timestamptz := pg_catalog.clock_timestamp();
  args       jsonb := pg_catalog.jsonb_build_object('user_id', user_id, 'status', status);
  old_status text;
begin
  perform smsao.count_call('admin_set_user_status');
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
exception when others then
  perform smsao.count_failure('admin_set_user_status', sqlstate);
  raise;
end
$$;
revoke all on function public.admin_set_user_status(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.admin_set_user_status(uuid, text) to authenticated, service_role;

-- A user's details for support, PII included; every call leaves a pii_access_audit row.
create or replace function public.admin_get_user_details(user_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('user_id', user_id);
  details jsonb;
begin
  perform smsao.count_call('admin_get_user_details');
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
exception when others then
  perform smsao.count_failure('admin_get_user_details', sqlstate);
  raise;
end
$$;
revoke all on function public.admin_get_user_details(uuid) from public, anon, authenticated, service_role;
grant execute on function public.admin_get_user_details(uuid) to authenticated, service_role;

-- The admins' list of users: what a list view needs, without PII (no name, email or
-- phone: those come one user at a time from admin_get_user_details, which is audited).
-- Admins read only their own row of public.profiles directly. Newest first, paged.
create or replace function public.admin_list_users(page_size integer default 50, page integer default 1)
  returns table (user_id uuid, status text, credits integer, is_admin boolean,
                 created_at timestamptz, updated_at timestamptz)
  language plpgsql security definer
  set search_path = ''
as $$
declare
  args jsonb := pg_catalog.jsonb_build_object('page_size', page_size, 'page', page);
begin
  perform smsao.count_call('admin_list_users');
  if page_size is null or page_size not between 1 and 1000 then
    raise exception 'page_size must be between 1 and 1000, got %', coalesce(page_size::text, 'NULL')
      using errcode = '22023';
  end if;
  if page is null or page < 1 then
    raise exception 'page must be a positive integer, got %', coalesce(page::text, 'NULL') using errcode = '22023';
  end if;
  perform smsao.guard_admin('admin_list_users', args);
  return query
  select p.user_id, p.status, p.credits,
         exists (select from public.user_roles r where r.user_id = p.user_id and r.role = 'admin'),
         p.created_at, p.updated_at
  from public.profiles p
  order by p.created_at desc, p.user_id
  limit page_size offset (page::bigint - 1) * page_size;
exception when others then
  perform smsao.count_failure('admin_list_users', sqlstate);
  raise;
end
$$;
revoke all on function public.admin_list_users(integer, integer) from public, anon, authenticated, service_role;
grant execute on function public.admin_list_users(integer, integer) to authenticated, service_role;

-- ==== sql/functions/audit_call.sql ====
-- The caller's user id, exactly what smsao.caller_id() returns (auth.uid(); NULL when the
-- subject is absent or not a uuid), read from the request settings the way auth.uid() reads
-- them. For the hot paths (rate limit, audit): on PostgreSQL 15 a call to a SQL function that
-- cannot be inlined (the auth.* shim pins search_path) is parsed and planned again in every
-- request, which cost the rate limiter a fifth of its time (bench/rate_limit_bench.py).
create or replace function smsao.request_uid() returns uuid
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
revoke all on function smsao.request_uid() from public, anon, authenticated, service_role;

-- Arguments as they may be stored or logged: values under keys that name secrets are
-- replaced, so codes and tokens never reach the audit or the server log.
create or replace function smsao.redact_arguments(arguments jsonb) returns jsonb
  language sql immutable
  set search_path = ''
as $$
  select coalesce((
    select pg_catalog.jsonb_object_agg(a.key,
             case when a.key ~* '(password|secret|token|code|otp|api_?key|credential)'
                  then '"[redacted]"'::jsonb else a.value end)
    from pg_catalog.jsonb_each(arguments) a), '{}'::jsonb)
$$;
revoke all on function smsao.redact_arguments(jsonb) from public, anon, authenticated, service_role;

-- Writes one function_call_audit row for the current caller, arguments redacted.
-- PL/pgSQL rather than SQL: its INSERT is planned once per session, not once per call.
create or replace function smsao.audit_call(
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
    smsao.redact_arguments(audit_call.arguments),
    audit_call.outcome,
    extract(epoch from pg_catalog.clock_timestamp() - audit_call.started_at) * 1000
  );
end
$$;
revoke all on function smsao.audit_call(text, jsonb, text, timestamptz) from public, anon, authenticated, service_role;

-- The one way a critical operation refuses. The raise rolls back any audit row, so the
-- refusal goes to the server log too (arguments redacted), and the operation's entry point
-- counts it in a sequence (smsao.count_failure), which the rollback does not undo.
create or replace function smsao.refuse(
  function_name text, arguments jsonb, outcome text, errcode text, message text
) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  raise log 'smsao refusal: %', pg_catalog.jsonb_build_object(
    'function', function_name, 'outcome', outcome, 'caller_id', smsao.caller_id(),
    'caller_role', smsao.caller_role(), 'arguments', smsao.redact_arguments(arguments), 'message', message);
  raise exception using errcode = refuse.errcode, message = refuse.message;
end
$$;
revoke all on function smsao.refuse(text, jsonb, text, text, text) from public, anon, authenticated, service_role;

-- Call counters of the critical operations (sequences, see sql/schema/40_hardening.sql).
-- Every entry point counts its call first and, in its exception handler, the way it
-- failed: a refusal (42501 denied, PT429 rate limited) or any other error.
create or replace function smsao.count_call(operation text) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  perform pg_catalog.nextval(('smsao.rpc_' || operation || '_calls')::regclass);
end
$$;
revoke all on function smsao.count_call(text) from public, anon, authenticated, service_role;

create or replace function smsao.count_failure(operation text, failed_with text) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  perform pg_catalog.nextval(('smsao.rpc_' || operation
    || case when failed_with in ('42501', 'PT429') then '_refusals' else '_errors' end)::regclass);
end
$$;
revoke all on function smsao.count_failure(text, text) from public, anon, authenticated, service_role;

-- The counters' totals since they were created: the monitoring reads differences of these.
create or replace function smsao.critical_call_totals()
  returns table (operation text, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable
  set search_path = ''
as $$
begin
  return query
  select c.name,
         coalesce(pg_catalog.pg_sequence_last_value(('smsao.rpc_' || c.name || '_calls')::regclass), 0),
         coalesce(pg_catalog.pg_sequence_last_value(('smsao.rpc_' || c.name || '_errors')::regclass), 0),
         coalesce(pg_catalog.pg_sequence_last_value(('smsao.rpc_' || c.name || '_refusals')::regclass), 0)
  from smsao.critical_operations c
  order by c.name;
end
$$;
revoke all on function smsao.critical_call_totals() from public, anon, authenticated, service_role;

-- ==== sql/functions/cache_invalidation.sql ====
-- Tells every app process which cached keys a statement made stale (runner.cache listens).
--
-- Statement-level with transition tables: one NOTIFY per statement carrying the distinct
-- keys of the owners it touched, so a 5,000-row import sends one notification, not 5,000.
-- The trigger arguments are key templates in which '{user_id}' stands for each affected
-- owner, e.g. 'contacts:{user_id}' or 'sms_logs:{user_id}:*' (a pattern: every page).
-- The payload is a JSON array of keys and fnmatch patterns. NOTIFY payloads must stay
-- under 8000 bytes: when the keys would not fit, the statement touched so many owners
-- that the whole family goes instead ('contacts:*'), as it does for TRUNCATE.
-- Notifications are sent at commit and never for a rolled-back transaction, so a cache
-- never drops (or refetches) a key for a change that did not happen.
--
-- One small trigger function per event, because each sees only its own transition
-- tables (an INSERT trigger has no old rows); they share smsao.send_cache_invalidation.

-- owners NULL means "everyone" (TRUNCATE); an empty array sends nothing.
create or replace function smsao.send_cache_invalidation(owners uuid[], templates text[]) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  payload text;
begin
  if owners is not null and pg_catalog.cardinality(owners) = 0 then
    return;  -- the statement changed no row
  end if;
  -- A key is at least a uuid (36 characters) with its quotes and a separator: past that
  -- many keys the payload cannot fit, so it is not built (at 100k owners it would be
  -- megabytes of text thrown away).
  if owners is not null and pg_catalog.cardinality(owners) * pg_catalog.cardinality(templates) * 39 <= 7900 then
    select pg_catalog.to_jsonb(pg_catalog.array_agg(pg_catalog.replace(t.template, '{user_id}', o.owner::text)
                                                     order by t.ord, o.owner))::text
      into payload
      from pg_catalog.unnest(templates) with ordinality t (template, ord)
     cross join pg_catalog.unnest(owners) o (owner);
  end if;
  if payload is null or pg_catalog.octet_length(payload) > 7900 then
    select pg_catalog.to_jsonb(pg_catalog.array_agg(pg_catalog.replace(t.template, '{user_id}', '*')
                                                     order by t.ord))::text
      into payload
      from pg_catalog.unnest(templates) with ordinality t (template, ord);
  end if;
  perform pg_catalog.pg_notify('cache_invalidation', payload);
end
$$;
revoke all on function smsao.send_cache_invalidation(uuid[], text[]) from public, anon, authenticated, service_role;
-- The triggers run with the writer's rights, and app users and the backend write these
-- tables (anon never can). Calling it directly can only make caches drop keys early.
grant execute on function smsao.send_cache_invalidation(uuid[], text[]) to authenticated, service_role;

create or replace function smsao.cache_invalidation_on_insert() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(
    (select coalesce(pg_catalog.array_agg(distinct n.user_id), '{}') from new_rows n), tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_insert() from public, anon, authenticated, service_role;

-- Both owners: an UPDATE may move a row from one user to another.
create or replace function smsao.cache_invalidation_on_update() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(
    (select coalesce(pg_catalog.array_agg(distinct u.user_id), '{}')
       from (select o.user_id from old_rows o union select n.user_id from new_rows n) u), tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_update() from public, anon, authenticated, service_role;

create or replace function smsao.cache_invalidation_on_delete() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(
    (select coalesce(pg_catalog.array_agg(distinct o.user_id), '{}') from old_rows o), tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_delete() from public, anon, authenticated, service_role;

create or replace function smsao.cache_invalidation_on_truncate() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(null, tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_truncate() from public, anon, authenticated, service_role;

-- ==== sql/functions/caller.sql ====
-- Who is calling, as the contract's section 1 defines it.
--   'anon' | 'authenticated' | 'service_role' when PostgREST switched to that role;
--   'authenticated' for any other session carrying JWT claims with a subject;
--   'service_role' for a claims-less superuser or owner of the schema (pg_cron, a DBA);
--   'anon' otherwise.
-- current_setting('role') is the SET ROLE of the request, also inside SECURITY DEFINER.
create or replace function smsao.caller_role() returns text
  language plpgsql stable
  set search_path = ''
as $$
declare
  requested text := pg_catalog.current_setting('role');
  login_role name;
begin
  if requested in ('anon', 'authenticated', 'service_role') then
    return requested;
  end if;
  if nullif(auth.jwt() ->> 'sub', '') is not null then
    return 'authenticated';
  end if;
  login_role := case when requested = 'none' then session_user else requested::name end;
  if exists (select from pg_catalog.pg_roles r where r.rolname = login_role and r.rolsuper)
     or pg_catalog.pg_has_role(login_role,
          (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'smsao'),
          'MEMBER') then
    return 'service_role';
  end if;
  return 'anon';
end
$$;
revoke all on function smsao.caller_role() from public, anon, authenticated, service_role;
grant execute on function smsao.caller_role() to anon, authenticated, service_role;

-- The caller's user id, or NULL when the subject claim is absent or not a uuid.
create or replace function smsao.caller_id() returns uuid
  language plpgsql stable
  set search_path = ''
as $$
begin
  return auth.uid();
exception when invalid_text_representation then
  return null;
end
$$;
revoke all on function smsao.caller_id() from public, anon, authenticated, service_role;
grant execute on function smsao.caller_id() to anon, authenticated, service_role;

-- ==== sql/functions/credit_ledger.sql ====
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

-- ==== sql/functions/credit_requests.sql ====
-- Credits are money: requests are created and decided only here, each call gated
-- (session, rate limit), audited, and counted (smsao.count_call / count_failure: the
-- counters survive the rollback of a refused or failed call).

create or replace function public.request_credits(amount integer) returns uuid
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('amount', amount);
  uid     uuid := smsao.caller_id();
  new_id  uuid;
begin
  perform smsao.count_call('request_credits');
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
exception when others then
  perform smsao.count_failure('request_credits', sqlstate);
  raise;
end
$$;
revoke all on function public.request_credits(integer) from public, anon, authenticated, service_role;
grant execute on function public.request_credits(integer) to authenticated;

-- Moves a pending request to `decision`, or raises: 22023 unknown request, 42501 the
-- caller's own request (an admin never decides their own), 55000 already decided. The row
-- lock taken by the UPDATE serialises concurrent deciders; the loser finds the request no
-- longer pending.
create or replace function smsao.decide_credit_request(request_id uuid, decision text, reason text)
  returns public.credit_requests
  language plpgsql
  set search_path = ''
as $$
declare
  decider uuid := smsao.caller_id();
  decided public.credit_requests;
  found_request public.credit_requests;
begin
  update public.credit_requests r
  set status = decision, reason = coalesce(decide_credit_request.reason, r.reason),
      processed_at = pg_catalog.now(), processed_by = decider
  where r.id = request_id and r.status = 'pending' and r.user_id is distinct from decider
  returning r.* into decided;
  if found then
    return decided;
  end if;
  select r.* into found_request from public.credit_requests r where r.id = request_id;
  if found_request.id is null then
    raise exception 'request_id: no credit request %', request_id using errcode = '22023';
  end if;
  if found_request.user_id = decider then
    perform smsao.refuse(case decision when 'approved' then 'approve_credit_request' else 'reject_credit_request' end,
      pg_catalog.jsonb_build_object('request_id', request_id), 'denied', '42501',
      'an admin cannot approve or reject their own credit request: another admin must decide it');
  end if;
  raise exception 'credit request % is already %', request_id, found_request.status
    using errcode = '55000', hint = 'only pending requests can be approved or rejected';
end
$$;
revoke all on function smsao.decide_credit_request(uuid, text, text) from public, anon, authenticated, service_role;

-- The admin gate: a valid session as an active admin (or the trusted backend), then
-- the admin_access rate limit.
create or replace function smsao.guard_admin(function_name text, arguments jsonb) returns void
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
revoke all on function smsao.guard_admin(text, jsonb) from public, anon, authenticated, service_role;

create or replace function public.approve_credit_request(request_id uuid) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('request_id', request_id);
  req     public.credit_requests;
  credits_after integer;
begin
  perform smsao.count_call('approve_credit_request');
  if request_id is null then
    raise exception 'request_id must not be NULL' using errcode = '22023';
  end if;
  perform smsao.guard_admin('approve_credit_request', args);

  req := smsao.decide_credit_request(request_id, 'approved', null);
  -- credit_request_id is unique: the credits of one request enter the ledger once.
  insert into public.credit_transactions (user_id, amount, kind, credit_request_id)
  values (req.user_id, req.amount, 'credit_request', req.id);
  -- The ledger's trigger updated the balance and holds the profile's row lock until commit:
  -- the balance read now is the one this approval produced.
  select p.credits into credits_after from public.profiles p where p.user_id = req.user_id;

  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'approve_credit_request', 'credit_requests', req.id::text,
          pg_catalog.jsonb_build_object('status', 'pending', 'credits', credits_after - req.amount),
          pg_catalog.jsonb_build_object('status', 'approved', 'credits', credits_after,
                                        'user_id', req.user_id, 'amount', req.amount));
  perform smsao.audit_call('approve_credit_request', args, 'ok', started);
exception when others then
  perform smsao.count_failure('approve_credit_request', sqlstate);
  raise;
end
$$;
revoke all on function public.approve_credit_request(uuid) from public, anon, authenticated, service_role;
grant execute on function public.approve_credit_request(uuid) to authenticated, service_role;

create or replace function public.reject_credit_request(request_id uuid, reason text) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('request_id', request_id, 'reason', reason);
  req     public.credit_requests;
begin
  perform smsao.count_call('reject_credit_request');
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
exception when others then
  perform smsao.count_failure('reject_credit_request', sqlstate);
  raise;
end
$$;
revoke all on function public.reject_credit_request(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.reject_credit_request(uuid, text) to authenticated, service_role;

-- ==== sql/functions/cron_jobs.sql ====
-- The pg_cron jobs of CONTRACT section 4, defined once, here. `smsao-db schedule apply`
-- (runner/schedule.py) reads this and applies it by job name, with
-- cron.schedule_in_database, into whichever database of the cluster holds pg_cron.
-- The definitions live in the database because the commands call functions of this
-- schema version: a migration that changes a job's function changes its definition in
-- the same revision, and every tool (runner, verify, a DBA in psql) reads the same list.
-- Migrations never schedule anything, so they apply where pg_cron is absent.
--   runs_in: 'target' = the database this function lives in; 'cron' = pg_cron's own
--   database (cron.job_run_details lives there).
create or replace function smsao.cron_jobs()
  returns table (jobname text, schedule text, command text, runs_in text)
  language sql immutable
  set search_path = ''
as $$
  values
    ('smsao-health-check', '*/5 * * * *', 'select public.record_health_snapshot()', 'target'),
    ('smsao-performance-check', '* * * * *', 'select public.record_performance_sample()', 'target'),
    ('smsao-data-cleanup', '0 3 * * *', 'call smsao.run_daily_maintenance()', 'target'),
    ('smsao-cron-history-cleanup', '30 3 * * *',
     -- A run that never ended (server restarted mid-run) has no end_time: its start dates it.
     'delete from cron.job_run_details where coalesce(end_time, start_time) < now() - interval ''7 days''', 'cron')
$$;
revoke all on function smsao.cron_jobs() from public, anon, authenticated, service_role;

-- ==== sql/functions/data_cleanup.sql ====
-- Retention cleanup (CONTRACT section 3). Exactly three rules, nothing else is deleted:
--   otp_codes            expires_at more than 2 hours ago
--   admin_audit_logs, pii_access_audit, function_call_audit
--                        created_at more than 2 years ago
--   contact_import_jobs  status completed or failed, completed_at more than 30 days ago
--
-- Rows go in batches of a few thousand, each one index range of the rule's column, so no
-- statement runs long or locks much. Two entry points share the same steps:
--   public.production_data_cleanup()  the contract's function: one transaction (a function
--                                     cannot commit), batches bound each statement;
--   call smsao.run_data_cleanup()     the procedure pg_cron and `smsao-db cleanup` use:
--                                     commits after every batch, so row locks, the
--                                     transaction's snapshot and an interruption all
--                                     cover one batch at most.
-- This is the only code that can delete audit rows: cleanup_batch runs as the owner with
-- smsao.audit_retention = on for its own duration (see smsao.forbid_audit_change).

-- The retention rules' categories, in cleanup order, with their cutoffs at time `at`.
create or replace function smsao.retention_cutoffs(at timestamptz) returns table (category text, cutoff timestamptz, rule text)
  language sql stable
  set search_path = ''
as $$
  select v.category, v.cutoff, v.rule
  from (values
    (1, 'otp_codes', at - interval '2 hours', 'expires_at more than 2 hours ago'),
    (2, 'contact_import_jobs', at - interval '30 days',
        'completed or failed, completed_at more than 30 days ago'),
    (3, 'admin_audit_logs', at - interval '2 years', 'created_at more than 2 years ago'),
    (4, 'pii_access_audit', at - interval '2 years', 'created_at more than 2 years ago'),
    (5, 'function_call_audit', at - interval '2 years', 'created_at more than 2 years ago')
  ) as v(ord, category, cutoff, rule)
  order by v.ord
$$;
revoke all on function smsao.retention_cutoffs(timestamptz) from public, anon, authenticated, service_role;

-- One batch of one category: the rows whose key (the rule's column) is in
-- [resume_at, upper), where upper is the key of the (batch_size + 1)-th eligible row from
-- resume_at, found by an index-only scan; or all remaining rows up to the cutoff, and then
-- `finished`. The DELETE is one index range scan: each row is visited once, and the
-- next batch starts at upper, so no batch wades through rows an earlier one deleted.
-- When more than batch_size rows share the key resume_at, the batch is batch_size of them.
-- The DELETE repeats the rule, so a row changed meanwhile is judged by its new values.
create or replace function smsao.cleanup_batch(category text, cutoff timestamptz, resume_at timestamptz,
                                    batch_size integer,
                                    out deleted integer, out next_key timestamptz, out finished boolean)
  language plpgsql security definer
  set search_path = ''
  set smsao.audit_retention = 'on'
as $$
declare
  upper timestamptz;
  last_included timestamptz;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be a positive integer' using errcode = '22023';
  end if;
  if cutoff is null or resume_at is null then
    raise exception 'cutoff and resume_at must not be null' using errcode = '22023';
  end if;
  -- Where this batch ends: the key of the first row after it (index-only scan).
  case category
  when 'otp_codes' then
    select o.expires_at into upper from public.otp_codes o
    where o.expires_at >= resume_at and o.expires_at < cutoff
    order by o.expires_at offset batch_size limit 1;
  when 'contact_import_jobs' then
    select j.completed_at into upper from public.contact_import_jobs j
    where j.status in ('completed', 'failed') and j.completed_at >= resume_at and j.completed_at < cutoff
    order by j.completed_at offset batch_size limit 1;
  when 'admin_audit_logs' then
    select a.created_at into upper from public.admin_audit_logs a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  when 'pii_access_audit' then
    select a.created_at into upper from public.pii_access_audit a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  when 'function_call_audit' then
    select a.created_at into upper from public.function_call_audit a
    where a.created_at >= resume_at and a.created_at < cutoff
    order by a.created_at offset batch_size limit 1;
  else
    raise exception 'category must be one of the retention categories, got %', category
      using errcode = '22023';
  end case;
  finished := upper is null;
  upper := coalesce(upper, cutoff);
  if upper = resume_at then
    -- More than batch_size rows share the key resume_at: this batch is batch_size of
    -- them, found by the same index, so a batch stays bounded by rows, not by key values.
    case category
    when 'otp_codes' then
      delete from public.otp_codes o where o.ctid = any (array(
        select x.ctid from public.otp_codes x where x.expires_at = resume_at limit batch_size));
    when 'contact_import_jobs' then
      delete from public.contact_import_jobs j where j.ctid = any (array(
        select x.ctid from public.contact_import_jobs x
        where x.status in ('completed', 'failed') and x.completed_at = resume_at limit batch_size));
    when 'admin_audit_logs' then
      delete from public.admin_audit_logs a where a.ctid = any (array(
        select x.ctid from public.admin_audit_logs x where x.created_at = resume_at limit batch_size));
    when 'pii_access_audit' then
      delete from public.pii_access_audit a where a.ctid = any (array(
        select x.ctid from public.pii_access_audit x where x.created_at = resume_at limit batch_size));
    when 'function_call_audit' then
      delete from public.function_call_audit a where a.ctid = any (array(
        select x.ctid from public.function_call_audit x where x.created_at = resume_at limit batch_size));
    end case;
    get diagnostics deleted = row_count;
    next_key := resume_at;  -- the rest of that key's rows, then onwards
    return;
  end if;
  -- Timestamps step by one microsecond, so "< upper" is "<= upper - 1 us": a bound the
  -- index uses even in a cached generic plan.
  last_included := upper - interval '1 microsecond';
  case category
  when 'otp_codes' then
    delete from public.otp_codes o
    where o.expires_at >= resume_at and o.expires_at <= last_included and o.expires_at < cutoff;
  when 'contact_import_jobs' then
    delete from public.contact_import_jobs j
    where j.status in ('completed', 'failed')
      and j.completed_at >= resume_at and j.completed_at <= last_included and j.completed_at < cutoff;
  when 'admin_audit_logs' then
    delete from public.admin_audit_logs a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  when 'pii_access_audit' then
    delete from public.pii_access_audit a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  when 'function_call_audit' then
    delete from public.function_call_audit a
    where a.created_at >= resume_at and a.created_at <= last_included and a.created_at < cutoff;
  end case;
  get diagnostics deleted = row_count;
  next_key := upper;
end
$$;
revoke all on function smsao.cleanup_batch(text, timestamptz, timestamptz, integer) from public, anon, authenticated, service_role;

-- One step of a cleanup run: the next batch of the current category. `progress` is NULL
-- to start and then what the previous step returned; it carries the cutoffs (fixed when
-- the run starts), the position and the counts, and is the final report once done:
--   {"started_at", "cutoffs": {category: ts}, "categories": {category: deleted},
--    "total", "batches", "dry_run": false, "position": {"index", "resume_at"}}
-- Kept apart from the procedure so that the procedure body holds no expression at all
-- (it cannot pin search_path, see smsao.run_data_cleanup).
create or replace function smsao.data_cleanup_step(progress jsonb, batch_size integer,
                                        out next_progress jsonb, out done boolean)
  language plpgsql security definer
  set search_path = ''
as $$
declare
  cats text[];
  idx integer;
  cat text;
  resume timestamptz;
  b record;
begin
  if batch_size is null or batch_size < 1 then
    raise exception 'batch_size must be a positive integer' using errcode = '22023';
  end if;
  if progress is null then
    select pg_catalog.jsonb_build_object(
             'started_at', pg_catalog.now(),
             'cutoffs', pg_catalog.jsonb_object_agg(c.category, c.cutoff),
             'categories', pg_catalog.jsonb_object_agg(c.category, 0),
             'rules', pg_catalog.jsonb_object_agg(c.category, c.rule),
             'total', 0, 'batches', 0, 'dry_run', false,
             'position', pg_catalog.jsonb_build_object('index', 1, 'resume_at', '-infinity'::timestamptz))
      into progress
      from smsao.retention_cutoffs(pg_catalog.now()) c;
  end if;
  cats := array(select c.category from smsao.retention_cutoffs(pg_catalog.now()) c);
  idx := (progress #>> '{position,index}')::integer;
  if idx > cardinality(cats) then
    next_progress := progress - 'position';
    done := true;
    return;
  end if;
  cat := cats[idx];
  resume := (progress #>> '{position,resume_at}')::timestamptz;

  select * into b
  from smsao.cleanup_batch(cat, (progress #>> array['cutoffs', cat])::timestamptz, resume, batch_size);

  progress := pg_catalog.jsonb_set(progress, array['categories', cat],
                pg_catalog.to_jsonb((progress #>> array['categories', cat])::bigint + b.deleted));
  progress := progress || pg_catalog.jsonb_build_object(
                'total', (progress ->> 'total')::bigint + b.deleted,
                'batches', (progress ->> 'batches')::bigint + 1);
  if b.finished then
    idx := idx + 1;
    resume := '-infinity';
  else
    resume := b.next_key;
  end if;
  progress := progress || pg_catalog.jsonb_build_object('position',
                pg_catalog.jsonb_build_object('index', idx, 'resume_at', resume));
  done := idx > cardinality(cats);
  next_progress := case when done then progress - 'position' else progress end;
end
$$;
revoke all on function smsao.data_cleanup_step(jsonb, integer) from public, anon, authenticated, service_role;

-- The committing path: pg_cron's daily job and `smsao-db cleanup` call this. Each batch
-- is its own transaction, committed asynchronously (see the loop).
-- PostgreSQL lets a procedure COMMIT only when it is neither SECURITY DEFINER nor has a
-- SET clause, so this one cannot pin search_path. Its body therefore evaluates no
-- expression of its own (no operator or unqualified name a search_path could redirect):
-- it calls the schema-qualified, search_path-pinned step function and commits. EXECUTE
-- is revoked from PUBLIC: the owner (pg_cron, a DBA) runs it; the app uses
-- public.production_data_cleanup().
create or replace procedure smsao.run_data_cleanup(batch_size integer default 5000, inout report jsonb default null)
  language plpgsql
as $$
declare
  progress jsonb;
  finished boolean;
begin
  loop
    -- A lost batch (crash before its WAL reached disk) only means those rows are
    -- deleted again by the next run, so each batch commits without waiting for the
    -- disk: the flushes would otherwise dominate and slow the app's own commits.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    select s.next_progress, s.done into progress, finished
    from smsao.data_cleanup_step(progress, batch_size) s;
    commit;
    exit when finished;
  end loop;
  report := progress;
end
$$;
revoke all on procedure smsao.run_data_cleanup(integer, jsonb) from public, anon, authenticated, service_role;

create or replace function public.production_data_cleanup() returns integer
  language plpgsql security definer
  set search_path = ''
as $$
declare
  progress jsonb;
  finished boolean := false;
begin
  perform smsao.require_operator('production_data_cleanup');
  while not finished loop
    select s.next_progress, s.done into progress, finished
    from smsao.data_cleanup_step(progress, 5000) s;
  end loop;
  return (progress ->> 'total')::integer;
end
$$;
comment on function public.production_data_cleanup() is
  'Retention: deletes OTPs expired more than 2 hours ago, audit rows older than 2 years and '
  'completed/failed import jobs finished more than 30 days ago, in batches; returns the total.';
revoke all on function public.production_data_cleanup() from public, anon, authenticated, service_role;
grant execute on function public.production_data_cleanup() to authenticated, service_role;

-- What a cleanup would delete now, per category; deletes nothing. Same shape as the
-- procedure's report, with "dry_run": true.
create or replace function public.production_data_cleanup_report() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  c record;
  n bigint;
  counts jsonb := '{}'::jsonb;
  cutoffs jsonb := '{}'::jsonb;
  rules jsonb := '{}'::jsonb;
  total bigint := 0::bigint;
begin
  perform smsao.require_operator('production_data_cleanup_report');
  for c in select * from smsao.retention_cutoffs(pg_catalog.now()) loop
    n := case c.category
      when 'otp_codes' then
        (select count(*) from public.otp_codes o where o.expires_at < c.cutoff)
      when 'contact_import_jobs' then
        (select count(*) from public.contact_import_jobs j
         where j.status in ('completed', 'failed') and j.completed_at < c.cutoff)
      when 'admin_audit_logs' then
        (select count(*) from public.admin_audit_logs a where a.created_at < c.cutoff)
      when 'pii_access_audit' then
        (select count(*) from public.pii_access_audit a where a.created_at < c.cutoff)
      when 'function_call_audit' then
        (select count(*) from public.function_call_audit a where a.created_at < c.cutoff)
    end;
    counts := counts || pg_catalog.jsonb_build_object(c.category, n);
    cutoffs := cutoffs || pg_catalog.jsonb_build_object(c.category, c.cutoff);
    rules := rules || pg_catalog.jsonb_build_object(c.category, c.rule);
    total := total + n;
  end loop;
  return pg_catalog.jsonb_build_object('started_at', pg_catalog.now(), 'cutoffs', cutoffs,
    'categories', counts, 'rules', rules, 'total', total, 'dry_run', true);
end
$$;
revoke all on function public.production_data_cleanup_report() from public, anon, authenticated, service_role;
grant execute on function public.production_data_cleanup_report() to authenticated, service_role;

-- ==== sql/functions/guard_app_writes.sql ====
-- Statement-level gates on the tables the app writes directly (through RLS): the
-- session must be valid and the operation within its rate limit, counted once per
-- statement (a 5,000-row import is one attempt). Writes made inside SECURITY DEFINER
-- functions or by trusted sessions run as another current_user and pass untouched.
create or replace function smsao.guard_app_write() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  if current_user in ('authenticated', 'anon') then
    perform smsao.guard_app_statement(tg_table_name, tg_op, tg_argv[0]);
  end if;
  return null;
end
$$;
revoke all on function smsao.guard_app_write() from public, anon, authenticated, service_role;

-- The gate itself, with the owner's rights (it writes the rate-limit state and the upsert
-- mark). App roles can execute it only because the trigger runs with their rights; called
-- anywhere but from a trigger it refuses.
-- One statement is one attempt, whatever its form: INSERT ... ON CONFLICT DO UPDATE fires
-- the BEFORE INSERT and then the BEFORE UPDATE statement triggers, so the INSERT gate marks
-- its statement (smsao.upsert_marks) and the UPDATE gate that finds the mark passes it;
-- the statement's AFTER INSERT trigger removes the mark (smsao.clear_upsert_mark).
create or replace function smsao.guard_app_statement(table_name text, operation text, operation_type text)
  returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  function_name text := table_name || '.' || pg_catalog.lower(operation);
begin
  if pg_catalog.pg_trigger_depth() < 1 then
    raise exception 'guard_app_statement runs only from the write triggers' using errcode = '42501';
  end if;
  if operation = 'UPDATE' and table_name = 'contacts' then
    delete from smsao.upsert_marks m
    where m.backend_pid = pg_catalog.pg_backend_pid() and m.xact_id = pg_catalog.pg_current_xact_id();
    if found then
      return;  -- the UPDATE half of an upsert whose INSERT half was counted
    end if;
  end if;
  perform smsao.count_call(operation_type);
  begin
    perform smsao.guard_critical(function_name, operation_type,
                                 pg_catalog.jsonb_build_object('table', table_name, 'operation', operation));
  exception when others then
    perform smsao.count_failure(operation_type, sqlstate);
    raise;
  end;
  if operation = 'INSERT' and table_name = 'contacts' then
    insert into smsao.upsert_marks (backend_pid, xact_id)
    values (pg_catalog.pg_backend_pid(), pg_catalog.pg_current_xact_id())
    on conflict do nothing;
  end if;
end
$$;
revoke all on function smsao.guard_app_statement(text, text, text) from public, anon, authenticated, service_role;
grant execute on function smsao.guard_app_statement(text, text, text) to anon, authenticated;

-- AFTER INSERT (statement) on contacts: the statement is over, so is its upsert mark.
create or replace function smsao.clear_upsert_mark() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  delete from smsao.upsert_marks m
  where m.backend_pid = pg_catalog.pg_backend_pid() and m.xact_id = pg_catalog.pg_current_xact_id();
  return null;
end
$$;
revoke all on function smsao.clear_upsert_mark() from public, anon, authenticated, service_role;

-- ==== sql/functions/handle_new_user.sql ====
-- Every auth.users row has a profile and the 'user' role. SECURITY DEFINER because
-- the auth service inserting users has no rights on public tables.
-- Statement-level, with the inserted rows as a transition table: importing 100,000 users
-- in one statement writes their profiles in one statement and their roles in another, so
-- the statement triggers of profiles (health counters, cache notifications) run once,
-- not once per user.
-- The name is read through to_jsonb(n): the contract promises only (id, email,
-- created_at) of an existing auth.users, and `raw_user_meta_data` on a table without
-- that column would make every sign-up fail.
create or replace function smsao.handle_new_user() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  -- An anti-join rather than ON CONFLICT (speculative insertion costs about twice a plain
  -- insert per row): a profile or role can already exist only if another trigger on
  -- auth.users wrote it (a Supabase project's own handle_new_user), in this statement.
  insert into public.profiles (user_id, email, full_name)
  select n.id, n.email, nullif(pg_catalog.to_jsonb(n) #>> '{raw_user_meta_data,full_name}', '')
  from new_users n
  where not exists (select from public.profiles p where p.user_id = n.id);
  insert into public.user_roles (user_id, role)
  select n.id, 'user' from new_users n
  where not exists (select from public.user_roles r where r.user_id = n.id and r.role = 'user');
  return null;
end
$$;
revoke all on function smsao.handle_new_user() from public, anon, authenticated, service_role;

-- ==== sql/functions/has_role.sql ====
-- Whether a user holds an application role. SECURITY DEFINER so RLS policies can ask
-- without recursing into user_roles' own policies. False for NULL arguments.
create or replace function public.has_role(user_id uuid, role public.app_role) returns boolean
  language sql stable security definer
  set search_path = ''
as $$
  select exists (
    select from public.user_roles ur
    where ur.user_id = has_role.user_id and ur.role = has_role.role
  )
$$;
revoke all on function public.has_role(uuid, public.app_role) from public, anon, authenticated, service_role;
grant execute on function public.has_role(uuid, public.app_role) to authenticated, service_role;

-- Whether the caller is an admin whose account is active: what RLS policies ask.
create or replace function smsao.is_admin() returns boolean
  language sql stable security definer
  set search_path = ''
as $$
  select exists (
    select from public.user_roles ur
    join public.profiles p on p.user_id = ur.user_id
    where ur.user_id = auth.uid() and ur.role = 'admin' and p.status = 'active'
  )
$$;
revoke all on function smsao.is_admin() from public, anon, authenticated, service_role;
grant execute on function smsao.is_admin() to authenticated, service_role;

-- ==== sql/functions/health_counters.sql ====
-- The live counters behind production_system_health_check() (table smsao.health_counters,
-- triggers in sql/triggers/health_counters.sql). Every change to a counted table adjusts
-- the counters in the same transaction, so a health check sees exactly what its snapshot
-- sees, at the cost of a few small-table reads however big the data grows.
--
-- Metrics kept here:
--   total_users              rows of public.profiles
--   pending_credit_requests  credit_requests with status 'pending'
--   orphaned_sms_logs        sms_logs rows whose user_id has no profile
--   orphaned_otp_codes       otp_codes rows with a user_id that has no profile
--   sms, sms_failed          sms_logs rows (all / status 'failed') per hour of created_at (UTC),
--                            kept for the last 48 hours of created_at
--
-- Advisory lock keys used by the monitoring code (two-int form, first key 7411220..7411229):
--   (7411220, 1)       one record_health_snapshot() at a time
--   (7411221, bucket)  owner-id buckets of the orphan counters (smsao.entering_orphans)

-- Add `delta` to a metric without waiting for any other writer: take any row of the
-- metric that no other transaction holds, or start a new row. Row count per metric stays
-- near the peak number of concurrent writers; smsao.compact_health_counters folds them.
create or replace function smsao.bump_counter(metric_name text, at_bucket timestamptz, delta bigint) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if delta = 0 then
    return;
  end if;
  update smsao.health_counters c set value = c.value + delta
  where c.id = (select h.id from smsao.health_counters h
                where h.metric = metric_name and h.bucket = at_bucket
                limit 1 for update skip locked);
  if not found then
    insert into smsao.health_counters (metric, bucket, value) values (metric_name, at_bucket, delta);
  end if;
end
$$;
revoke all on function smsao.bump_counter(text, timestamptz, bigint) from public, anon, authenticated, service_role;

-- The hour bucket of a timestamp, the same in every session time zone.
create or replace function smsao.hour_bucket(ts timestamptz) returns timestamptz
  language sql immutable parallel safe
  set search_path = ''
as $$
  select pg_catalog.date_bin('1 hour', ts, '2000-01-01 00:00:00+00'::timestamptz)
$$;
revoke all on function smsao.hour_bucket(timestamptz) from public, anon, authenticated, service_role;

-- Orphan accounting. A row of sms_logs / otp_codes is orphaned when its user_id has no
-- profile; smsao.missing_owners holds exactly those user ids that rows refer to. Four
-- kinds of change move the count, and each is made exact under concurrency by a lock:
--
--  * rows entering (insert, new side of an update), smsao.entering_orphans: owners found
--    are locked FOR KEY SHARE, as a foreign key check does, so a concurrent deletion of
--    the profile waits and then counts these rows itself. For owners not found we take
--    the exclusive advisory lock of their id bucket, look again, and record them in
--    missing_owners; a transaction creating such a profile holds that bucket shared.
--  * rows leaving (delete, old side of an update): a row was orphaned iff its owner is in
--    missing_owners. No lock: a concurrent profile insert/delete locks the rows it counts
--    (FOR KEY SHARE), so either it waited for our deletion or our deletion waits for its
--    commit and then sees its change of missing_owners; each row is counted once.
--  * a profile deleted, smsao.count_profiles_delete: its rows become orphans.
--  * a profile created, smsao.count_profiles_insert: an id in missing_owners (an account
--    re-created with an old id) adopts its rows.
-- Advisory buckets: (7411221, hashtext(user_id) & 1023).

-- How many of some entering rows are orphaned. owner_ids/row_counts: the distinct
-- non-null user_ids of the rows and how many rows each has.
create or replace function smsao.entering_orphans(owner_ids uuid[], row_counts bigint[]) returns bigint
  language plpgsql
  set search_path = ''
as $$
declare
  missing uuid[];
begin
  if coalesce(cardinality(owner_ids), 0) = 0 then
    return 0::bigint;
  end if;
  -- Which owners exist is what this statement locked: the lock and the look are one,
  -- so a profile committed or deleted in between cannot slip past both.
  missing := array(select u from unnest(owner_ids) u
                   except
                   select k.user_id from (select p.user_id from public.profiles p
                                          where p.user_id = any (owner_ids) for key share) k);
  if cardinality(missing) = 0 then
    return 0::bigint;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(7411221, s.bucket)
  from (select distinct (pg_catalog.hashtext(u::text) & 1023) as bucket
        from unnest(missing) u order by 1) s;
  -- A profile for one of these may have committed while we waited.
  missing := array(select u from unnest(missing) u
                   except
                   select k.user_id from (select p.user_id from public.profiles p
                                          where p.user_id = any (missing) for key share) k);
  if cardinality(missing) = 0 then
    return 0::bigint;
  end if;
  insert into smsao.missing_owners (user_id) select u from unnest(missing) u on conflict do nothing;
  return (select coalesce(sum(t.n), 0)::bigint
          from unnest(owner_ids, row_counts) as t(u, n)
          join unnest(missing) as m(u) on m.u = t.u);
end
$$;
revoke all on function smsao.entering_orphans(uuid[], bigint[]) from public, anon, authenticated, service_role;

-- The trigger functions below run once per statement, one per table and event (a
-- trigger with transition tables serves one event). SECURITY DEFINER: whoever writes
-- the counted table needs no right on the smsao tables.

-- profiles: total_users, and the orphan counters when an owner comes or goes.
create or replace function smsao.count_profiles_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  users bigint;
  adopted uuid[];
  sms_rows bigint := 0::bigint;
  otp_rows bigint := 0::bigint;
begin
  select count(*) into users from new_rows;
  -- Wait for in-flight writers of ownerless rows of these ids (they hold the bucket
  -- exclusively), then take over the ids' rows if any were left by an old account.
  perform pg_catalog.pg_advisory_xact_lock_shared(7411221, s.bucket)
  from (select distinct (pg_catalog.hashtext(n.user_id::text) & 1023) as bucket
        from new_rows n order by 1) s;
  with gone as (
    delete from smsao.missing_owners m where m.user_id in (select n.user_id from new_rows n)
    returning m.user_id)
  select pg_catalog.array_agg(g.user_id) into adopted from gone g;
  if adopted is not null then
    select count(*) into sms_rows from (
      select from public.sms_logs l where l.user_id = any (adopted) for key share of l) x;
    select count(*) into otp_rows from (
      select from public.otp_codes o where o.user_id = any (adopted) for key share of o) x;
  end if;
  perform smsao.bump_counter('total_users', '-infinity', users);
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', -sms_rows);
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', -otp_rows);
  return null;
end
$$;
revoke all on function smsao.count_profiles_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_profiles_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  users bigint;
  sms_rows bigint;
  otp_rows bigint;
  sms_owners uuid[];
  otp_owners uuid[];
begin
  select count(*) into users from old_rows;
  -- The deleted users' rows become orphans. Locking them makes a concurrent deletion of
  -- one of them either finish first (not counted here) or wait for our commit.
  -- Cost: proportional to the deleted users' rows; deleting a user is rare.
  with locked as (
    select l.user_id from public.sms_logs l
    where l.user_id in (select o.user_id from old_rows o) for key share of l)
  select count(*), pg_catalog.array_agg(distinct k.user_id) into sms_rows, sms_owners from locked k;
  with locked as (
    select c.user_id from public.otp_codes c
    where c.user_id in (select o.user_id from old_rows o) for key share of c)
  select count(*), pg_catalog.array_agg(distinct k.user_id) into otp_rows, otp_owners from locked k;
  insert into smsao.missing_owners (user_id)
  select u from unnest(sms_owners || otp_owners) u on conflict do nothing;
  perform smsao.bump_counter('total_users', '-infinity', -users);
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', sms_rows);
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', otp_rows);
  return null;
end
$$;
revoke all on function smsao.count_profiles_delete() from public, anon, authenticated, service_role;

-- credit_requests: pending_credit_requests.
create or replace function smsao.count_credit_requests_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_credit_requests_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending')
    - (select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_update() from public, anon, authenticated, service_role;

create or replace function smsao.count_credit_requests_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    -(select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_delete() from public, anon, authenticated, service_role;

-- sms_logs: per-hour totals and failures (`sms`, `sms_failed`), and orphaned_sms_logs.
-- Hours older than 48 h are not kept: the health check reads the last 25.
create or replace function smsao.count_sms_logs_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  ids uuid[];
  counts bigint[];
begin
  for r in select pg_catalog.date_bin('1 hour', n.created_at, bucket_origin) as bucket, count(*) as total,
                  count(*) filter (where n.status = 'failed') as failed
           from new_rows n where n.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select n.user_id, count(*) as n from new_rows n group by 1) g;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', smsao.entering_orphans(ids, counts));
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_sms_logs_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  orphans bigint := 0::bigint;
begin
  for r in select pg_catalog.date_bin('1 hour', o.created_at, bucket_origin) as bucket, count(*) as total,
                  count(*) filter (where o.status = 'failed') as failed
           from old_rows o where o.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, -r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, -r.failed);
  end loop;
  if exists (select from smsao.missing_owners) then
    select count(*) into orphans from old_rows o join smsao.missing_owners m on m.user_id = o.user_id;
  end if;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', -orphans);
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_delete() from public, anon, authenticated, service_role;

-- Status updates (delivery reports) are the common case: they move a row in or out of
-- `sms_failed` and leave the rest alone; a changed user_id is a leaving old row plus an
-- entering new one.
create or replace function smsao.count_sms_logs_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  for r in select d.bucket, sum(d.total) as total, sum(d.failed) as failed
           from (select pg_catalog.date_bin('1 hour', n.created_at, bucket_origin) as bucket, 1 as total,
                        (n.status = 'failed')::int as failed
                 from new_rows n where n.created_at >= oldest
                 union all
                 select pg_catalog.date_bin('1 hour', o.created_at, bucket_origin), -1, -((o.status = 'failed')::int)
                 from old_rows o where o.created_at >= oldest) d
           group by d.bucket loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  -- A count, not EXISTS: under EXISTS the planner optimises for the first row and joins the
  -- transition tables by nested loop, comparing every pair when no row changed its owner
  -- (a status update, the usual case): quadratic in the statement's rows.
  if (select count(*) from old_rows o join new_rows n on n.id = o.id where n.user_id <> o.user_id) > 0 then
    select -count(*) into orphans
    from old_rows o join new_rows n on n.id = o.id join smsao.missing_owners m on m.user_id = o.user_id
    where n.user_id <> o.user_id;
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id <> o.user_id group by 1) g;
    orphans := orphans + smsao.entering_orphans(ids, counts);
  end if;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', orphans);
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_update() from public, anon, authenticated, service_role;

-- otp_codes: orphaned_otp_codes (OTPs without user_id are for phones, never orphaned).
create or replace function smsao.count_otp_codes_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
begin
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select n.user_id, count(*) as n from new_rows n where n.user_id is not null group by 1) g;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', smsao.entering_orphans(ids, counts));
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_insert() from public, anon, authenticated, service_role;

-- The retention cleanup deletes OTPs by the million: with no orphaned owners at all (the
-- usual case) this costs one look at an empty table per statement.
create or replace function smsao.count_otp_codes_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  orphans bigint := 0::bigint;
begin
  if exists (select from smsao.missing_owners) then
    select count(*) into orphans from old_rows o join smsao.missing_owners m on m.user_id = o.user_id;
  end if;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', -orphans);
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_delete() from public, anon, authenticated, service_role;

create or replace function smsao.count_otp_codes_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  -- A count, not EXISTS: see smsao.count_sms_logs_update.
  if (select count(*) from old_rows o join new_rows n on n.id = o.id
      where n.user_id is distinct from o.user_id) > 0 then
    select -count(*) into orphans
    from old_rows o join new_rows n on n.id = o.id join smsao.missing_owners m on m.user_id = o.user_id
    where n.user_id is distinct from o.user_id;
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id is distinct from o.user_id and n.user_id is not null group by 1) g;
    orphans := orphans + smsao.entering_orphans(ids, counts);
  end if;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', orphans);
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_update() from public, anon, authenticated, service_role;

-- Recompute every counter from the tables. Run by the migration that introduces the
-- counters, after a TRUNCATE or a change of profiles.user_id (both rare), and by a DBA
-- after loading data with triggers disabled (session_replication_role = replica).
-- Cost: one pass over each counted table. Writers of those tables wait meanwhile
-- (SHARE lock), which is what makes the result exact.
create or replace function smsao.recount_health_counters() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
begin
  lock table public.profiles, public.credit_requests, public.sms_logs, public.otp_codes in share mode;
  delete from smsao.health_counters;
  delete from smsao.missing_owners;
  with orphan_owners as (
    select l.user_id, count(*) as sms_rows, 0::bigint as otp_rows from public.sms_logs l
    where not exists (select from public.profiles p where p.user_id = l.user_id) group by 1
    union all
    select o.user_id, 0, count(*) from public.otp_codes o
    where o.user_id is not null and not exists (select from public.profiles p where p.user_id = o.user_id)
    group by 1
  ), recorded as (
    insert into smsao.missing_owners (user_id) select distinct x.user_id from orphan_owners x
  )
  insert into smsao.health_counters (metric, value)
  select 'total_users', count(*) from public.profiles
  union all
  select 'pending_credit_requests', count(*) from public.credit_requests where status = 'pending'
  union all
  select 'orphaned_sms_logs', coalesce(sum(x.sms_rows), 0) from orphan_owners x
  union all
  select 'orphaned_otp_codes', coalesce(sum(x.otp_rows), 0) from orphan_owners x;
  insert into smsao.health_counters (metric, bucket, value)
  select m.metric, b.bucket, m.value
  from (select smsao.hour_bucket(l.created_at) as bucket, count(*) as total,
               count(*) filter (where l.status = 'failed') as failed
        from public.sms_logs l where l.created_at >= oldest group by 1) b
  cross join lateral (values ('sms', b.total), ('sms_failed', b.failed)) as m(metric, value)
  where m.value <> 0;
  return (select pg_catalog.jsonb_object_agg(t.metric, t.total)
          from (select c.metric, sum(c.value) as total from smsao.health_counters c
                where c.bucket = '-infinity' group by c.metric) t);
end
$$;
revoke all on function smsao.recount_health_counters() from public, anon, authenticated, service_role;

create or replace function smsao.recount_health_counters_trigger() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.recount_health_counters();
  return null;
end
$$;
revoke all on function smsao.recount_health_counters_trigger() from public, anon, authenticated, service_role;

-- Fold each metric's rows into one and drop hours no reader needs, skipping rows that a
-- writer holds right now (they are folded next time). Returns the rows removed.
-- Run by record_health_snapshot() and the daily housekeeping; correctness never depends
-- on it, only the size of smsao.health_counters does.
create or replace function smsao.compact_health_counters() returns integer
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
  removed integer;
  folded integer := 0;
  r record;
begin
  delete from smsao.health_counters c
  where c.id in (select h.id from smsao.health_counters h
                 where h.bucket > '-infinity' and h.bucket < oldest
                 for update skip locked);
  get diagnostics removed = row_count;
  for r in select l.metric, l.bucket, pg_catalog.array_agg(l.id order by l.id) as ids, sum(l.value) as total
           from (select h.id, h.metric, h.bucket, h.value from smsao.health_counters h
                 for update skip locked) l
           group by l.metric, l.bucket having count(*) > 1 loop
    update smsao.health_counters c set value = r.total where c.id = r.ids[1];
    delete from smsao.health_counters c where c.id = any (r.ids[2:]);
    folded := folded + cardinality(r.ids) - 1;
  end loop;
  return removed + folded;
end
$$;
revoke all on function smsao.compact_health_counters() from public, anon, authenticated, service_role;

-- ==== sql/functions/housekeeping.sql ====
-- Housekeeping, separate from the retention rules: monitoring history older than 30 days,
-- counter rows no reader needs, and rate-limit state past its window.
-- Run by the daily job (smsao.run_daily_maintenance).
create or replace function smsao.prune_housekeeping() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  snapshots integer;
  samples integer;
  counters integer;
  rate_limit integer;
begin
  perform smsao.require_operator('prune_housekeeping');
  delete from public.system_health_snapshots s where s.checked_at < pg_catalog.now() - interval '30 days';
  get diagnostics snapshots = row_count;
  delete from public.performance_samples p where p.sampled_at < pg_catalog.now() - interval '30 days';
  get diagnostics samples = row_count;
  counters := smsao.compact_health_counters();
  rate_limit := smsao.prune_rate_limit_state();
  return pg_catalog.jsonb_build_object(
    'system_health_snapshots', snapshots,
    'performance_samples', samples,
    'health_counters', counters,
    'rate_limit_state', rate_limit);
end
$$;
revoke all on function smsao.prune_housekeeping() from public, anon, authenticated, service_role;

-- The daily pg_cron job: the retention cleanup (committing per batch), then housekeeping.
-- Like smsao.run_data_cleanup it cannot pin search_path (it commits), so it only calls
-- schema-qualified routines.
create or replace procedure smsao.run_daily_maintenance()
  language plpgsql
as $$
declare
  report jsonb;
begin
  call smsao.run_data_cleanup(5000, report);
  perform smsao.prune_housekeeping();
end
$$;
revoke all on procedure smsao.run_daily_maintenance() from public, anon, authenticated, service_role;

-- ==== sql/functions/monitoring.sql ====
-- Monitoring history, run by pg_cron (sql/functions/cron_jobs.sql) and callable by
-- service_role.

-- Store a health snapshot; on a change of status (the first snapshot counts as a change
-- from 'healthy') insert one system_alerts row and NOTIFY system_alerts with
--   {"alert_id", "severity", "status", "previous_status", "snapshot_id", "at"}.
-- Returns the health report plus "snapshot_id" and "alert" (the alert row, or null).
create or replace function public.record_health_snapshot() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  report jsonb;
  current_status text;
  previous_status text;
  snapshot_id bigint;
  alert jsonb;
  severity text;
  alert_id bigint;
  message text;
begin
  if smsao.caller_role() <> 'service_role' then
    raise exception 'record_health_snapshot: only service_role may call this' using errcode = '42501';
  end if;
  -- One recorder at a time: two concurrent runs would both compare against the same
  -- previous snapshot and raise the same alert twice.
  perform pg_catalog.pg_advisory_xact_lock(7411220, 1);
  perform smsao.compact_health_counters();

  report := smsao.health_report();
  current_status := report ->> 'system_status';
  select s.system_status into previous_status
  from public.system_health_snapshots s order by s.checked_at desc, s.id desc limit 1;
  previous_status := coalesce(previous_status, 'healthy');

  insert into public.system_health_snapshots (checked_at, system_status, report)
  values (pg_catalog.now(), current_status, report)
  returning id into snapshot_id;

  if current_status <> previous_status then
    severity := case current_status when 'healthy' then 'recovered' else current_status end;
    message := pg_catalog.format('system status changed from %s to %s', previous_status, current_status);
    if pg_catalog.jsonb_array_length(report -> 'recommendations') > 0 then
      message := message || pg_catalog.format(' (%s)', (
        select pg_catalog.string_agg(r, ', ') from pg_catalog.jsonb_array_elements_text(report -> 'recommendations') r));
    end if;
    insert into public.system_alerts (severity, message, report)
    values (severity, message, report)
    returning id into alert_id;
    alert := pg_catalog.jsonb_build_object('alert_id', alert_id, 'severity', severity,
      'status', current_status, 'previous_status', previous_status,
      'snapshot_id', snapshot_id, 'at', pg_catalog.now());
    perform pg_catalog.pg_notify('system_alerts', alert::text);
  end if;
  return report || pg_catalog.jsonb_build_object('snapshot_id', snapshot_id, 'alert', alert);
end
$$;
revoke all on function public.record_health_snapshot() from public, anon, authenticated, service_role;
grant execute on function public.record_health_snapshot() to service_role;

-- Store a performance sample: response time of the health check and of representative
-- app reads (the latest sender's profile, their newest SMS page and contacts page), and the
-- error rate of the critical operations since the previous sample: calls that ended in an
-- error other than a refusal, over all their calls (0 when there were none). The figures
-- come from the counters of smsao.critical_call_totals(), which count calls whose
-- transaction rolled back too; each sample keeps the totals it saw in details.counters.
-- Run every minute by pg_cron, it also prunes rate-limit state past its window.
create or replace function public.record_performance_sample() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz;
  health_ms numeric;
  app_ms numeric;
  sender uuid;
  totals jsonb;
  previous jsonb;
  calls bigint;
  errors bigint;
  refusals bigint;
  rate numeric;
  pruned integer;
  sample public.performance_samples;
begin
  if smsao.caller_role() <> 'service_role' then
    raise exception 'record_performance_sample: only service_role may call this' using errcode = '42501';
  end if;

  started := pg_catalog.clock_timestamp();
  perform smsao.health_report();
  health_ms := extract(epoch from pg_catalog.clock_timestamp() - started) * 1000;

  started := pg_catalog.clock_timestamp();
  select l.user_id into sender from public.sms_logs l order by l.id desc limit 1;
  perform from public.profiles p where p.user_id = sender;
  perform from public.sms_logs l where l.user_id = sender order by l.created_at desc limit 50;
  perform from public.contacts c where c.user_id = sender order by c.phone limit 50;
  app_ms := extract(epoch from pg_catalog.clock_timestamp() - started) * 1000;

  select pg_catalog.jsonb_object_agg(t.operation, pg_catalog.jsonb_build_object(
           'calls', t.calls, 'errors', t.errors, 'refusals', t.refusals))
    into totals from smsao.critical_call_totals() t;
  select p.details -> 'counters' into previous
  from public.performance_samples p order by p.sampled_at desc, p.id desc limit 1;
  -- Differences per operation; a counter below its previous total was reset (restore).
  select coalesce(sum(greatest(d.calls, 0)), 0)::bigint, coalesce(sum(greatest(d.errors, 0)), 0)::bigint,
         coalesce(sum(greatest(d.refusals, 0)), 0)::bigint
    into calls, errors, refusals
  from (select (t.value ->> 'calls')::bigint - coalesce((previous #>> array[t.key, 'calls'])::bigint, 0) as calls,
               (t.value ->> 'errors')::bigint - coalesce((previous #>> array[t.key, 'errors'])::bigint, 0) as errors,
               (t.value ->> 'refusals')::bigint - coalesce((previous #>> array[t.key, 'refusals'])::bigint, 0) as refusals
        from pg_catalog.jsonb_each(totals) t) d;
  rate := case when calls > 0 then least(round(errors::numeric / calls, 6), 1) else 0 end;
  pruned := smsao.prune_rate_limit_state(10000);

  insert into public.performance_samples (sampled_at, response_time_ms, error_rate, details)
  values (pg_catalog.now(), round(health_ms + app_ms, 3), rate,
          pg_catalog.jsonb_build_object(
            'health_check_ms', round(health_ms, 3),
            'app_queries_ms', round(app_ms, 3),
            'calls_since_previous', calls,
            'errors_since_previous', errors,
            'refusals_since_previous', refusals,
            'rate_limit_keys_pruned', pruned,
            'counters', totals))
  returning * into sample;
  return pg_catalog.to_jsonb(sample);
end
$$;
revoke all on function public.record_performance_sample() from public, anon, authenticated, service_role;
grant execute on function public.record_performance_sample() to service_role;

-- ==== sql/functions/monitoring_access.sql ====
-- Monitoring and retention are for operators: service_role (the backend, pg_cron, a DBA)
-- and active admins. Everyone else gets 42501 naming the function.
create or replace function smsao.require_operator(function_name text) returns void
  language plpgsql stable
  set search_path = ''
as $$
begin
  if smsao.caller_role() = 'service_role' or smsao.is_admin() then
    return;
  end if;
  raise exception '%: only admins and service_role may call this', function_name
    using errcode = '42501';
end
$$;
revoke all on function smsao.require_operator(text) from public, anon, authenticated, service_role;

-- ==== sql/functions/production_system_health_check.sql ====
-- The health report (CONTRACT section 3):
--   {"timestamp", "system_status": "healthy"|"warning"|"critical",
--    "metrics": {"total_users", "active_sms_configs", "pending_credit_requests",
--                "failed_sms_24h", "orphaned_data", "sms_failure_rate"},
--    "recommendations": [code, ...],
--    "checks": {metric: "ok"|"warning"|"critical"}, "thresholds": {...},
--    "details": {"orphaned_data": {...}, "sms_window": {...}}}
--
-- Metrics, all live (same snapshot as the caller), none scanning a big table:
--   total_users              = count(*) from profiles                      [counter]
--   active_sms_configs       = count(*) from sms_configurations where is_active  [small table]
--   pending_credit_requests  = count(*) from credit_requests where status = 'pending'  [counter]
--   failed_sms_24h           = count(*) from sms_logs where status = 'failed'
--                              and created_at > now() - 24 hours
--                              [per-hour counters, plus the window's first, partial hour
--                               from the partial index sms_logs_failed_created_idx]
--   orphaned_data            = rows whose owner is gone in the two relations that no
--                              foreign key protects (see sql/schema/10_tables.sql):
--                              sms_logs whose user_id has no profile, plus otp_codes
--                              whose (non-null) user_id has no profile   [counters]
--                              A profile exists exactly while its auth.users row does.
--   sms_failure_rate         = failed / all sms_logs created since the start of the hour
--                              24 hours ago (details.sms_window)        [per-hour counters]
--
-- Status: the worst level among the checks. Each threshold in smsao.health_thresholds
-- gives 'warning' from warning_at and 'critical' from critical_at; no active SMS
-- configuration is always critical (nothing can be sent).
-- Recommendations: configure_sms_gateway (no active configuration),
-- investigate_failed_sms (failed_sms_24h or sms_failure_rate at warning or worse),
-- review_pending_credit_requests, cleanup_orphaned_data (their metric at warning or worse).
create or replace function smsao.health_report() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  at timestamptz := pg_catalog.now();
  window_start timestamptz := smsao.hour_bucket(at - interval '24 hours');
  users bigint;
  pending bigint;
  orphan_sms bigint;
  orphan_otp bigint;
  window_total bigint;
  window_failed bigint;
  failed_later bigint;
  failed_edge bigint;
  configs bigint;
  failed_24h bigint;
  rate numeric;
  t record;
  val numeric;
  sample numeric;
  lvl text;
  checks jsonb := '{}'::jsonb;
  thresholds jsonb := '{}'::jsonb;
  recommendations text[] := '{}'::text[];
  status text := 'healthy';
begin
  select coalesce(sum(c.value) filter (where c.metric = 'total_users' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'pending_credit_requests' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'orphaned_sms_logs' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'orphaned_otp_codes' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms' and c.bucket >= window_start), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms_failed' and c.bucket >= window_start), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms_failed'
                                         and c.bucket >= window_start + interval '1 hour'), 0)::bigint
    into users, pending, orphan_sms, orphan_otp, window_total, window_failed, failed_later
    from smsao.health_counters c;

  select count(*) into failed_edge from public.sms_logs l
  where l.status = 'failed' and l.created_at > at - interval '24 hours'
    and l.created_at < window_start + interval '1 hour';
  failed_24h := failed_edge + failed_later;

  select count(*) into configs from public.sms_configurations s where s.is_active;
  rate := case when window_total > 0 then round(window_failed::numeric / window_total, 4) else 0 end;

  for t in select * from smsao.health_thresholds h order by h.metric loop
    val := case t.metric
             when 'failed_sms_24h' then failed_24h
             when 'sms_failure_rate' then rate
             when 'pending_credit_requests' then pending
             when 'orphaned_data' then orphan_sms + orphan_otp
           end;
    sample := case t.metric when 'sms_failure_rate' then window_total else val end;
    lvl := case when sample < t.min_sample then 'ok'
                when val >= t.critical_at then 'critical'
                when val >= t.warning_at then 'warning'
                else 'ok' end;
    checks := checks || pg_catalog.jsonb_build_object(t.metric, lvl);
    thresholds := thresholds || pg_catalog.jsonb_build_object(t.metric, pg_catalog.jsonb_build_object(
      'warning_at', t.warning_at, 'critical_at', t.critical_at, 'min_sample', t.min_sample));
  end loop;
  checks := checks || pg_catalog.jsonb_build_object(
    'active_sms_configs', case when configs = 0 then 'critical' else 'ok' end);

  if checks @> '{"active_sms_configs": "critical"}' then
    recommendations := recommendations || 'configure_sms_gateway'::text;
  end if;
  if coalesce(checks ->> 'failed_sms_24h', 'ok') <> 'ok' or coalesce(checks ->> 'sms_failure_rate', 'ok') <> 'ok' then
    recommendations := recommendations || 'investigate_failed_sms'::text;
  end if;
  if coalesce(checks ->> 'pending_credit_requests', 'ok') <> 'ok' then
    recommendations := recommendations || 'review_pending_credit_requests'::text;
  end if;
  if coalesce(checks ->> 'orphaned_data', 'ok') <> 'ok' then
    recommendations := recommendations || 'cleanup_orphaned_data'::text;
  end if;

  if exists (select from pg_catalog.jsonb_each_text(checks) e where e.value = 'critical') then
    status := 'critical';
  elsif exists (select from pg_catalog.jsonb_each_text(checks) e where e.value = 'warning') then
    status := 'warning';
  end if;

  return pg_catalog.jsonb_build_object(
    'timestamp', at,
    'system_status', status,
    'metrics', pg_catalog.jsonb_build_object(
      'total_users', users,
      'active_sms_configs', configs,
      'pending_credit_requests', pending,
      'failed_sms_24h', failed_24h,
      'orphaned_data', orphan_sms + orphan_otp,
      'sms_failure_rate', rate),
    'recommendations', pg_catalog.to_jsonb(recommendations),
    'checks', checks,
    'thresholds', thresholds,
    'details', pg_catalog.jsonb_build_object(
      'orphaned_data', pg_catalog.jsonb_build_object('sms_logs', orphan_sms, 'otp_codes', orphan_otp),
      'sms_window', pg_catalog.jsonb_build_object(
        'since', window_start, 'total', window_total, 'failed', window_failed)));
end
$$;
revoke all on function smsao.health_report() from public, anon, authenticated, service_role;

create or replace function public.production_system_health_check() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('production_system_health_check');
  return smsao.health_report();
end
$$;
comment on function public.production_system_health_check() is
  'System health for admins and service_role. orphaned_data = sms_logs rows whose user_id has '
  'no profile + otp_codes rows whose non-null user_id has no profile (the relations without a '
  'foreign key). Thresholds: smsao.health_thresholds. See sql/functions/production_system_health_check.sql.';
revoke all on function public.production_system_health_check() from public, anon, authenticated, service_role;
grant execute on function public.production_system_health_check() to authenticated, service_role;

-- ==== sql/functions/rate_limit.sql ====
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

-- ==== sql/functions/validate_user_session.sql ====
-- True only for service_role, or for an authenticated caller whose profile is active,
-- whose JWT has not expired (when it carries exp) and whose session_id (when present)
-- is an unexpired auth.sessions row of that same user. Never an error.
create or replace function public.validate_user_session() returns boolean
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
revoke all on function public.validate_user_session() from public, anon, authenticated, service_role;
grant execute on function public.validate_user_session() to anon, authenticated, service_role;

-- The gate of every critical operation: a valid session, then the operation's rate limit.
-- service_role is the trusted backend: every backend worker shares its one login (and so
-- one rate-limit key), so the operations' limits do not throttle it.
create or replace function smsao.guard_critical(function_name text, operation_type text, arguments jsonb)
  returns void
  language plpgsql
  set search_path = ''
as $$
declare
  lim smsao.operation_limits;
begin
  if not public.validate_user_session() then
    perform smsao.refuse(function_name, arguments, 'denied', '42501',
      'invalid session: sign in again (the account must be active and the token unexpired)');
  end if;
  if smsao.caller_role() = 'service_role' then
    return;
  end if;
  select * into strict lim from smsao.operation_limits l where l.operation_type = guard_critical.operation_type;
  if not public.enhanced_security_rate_limit(operation_type, lim.max_attempts, lim.window_minutes) then
    perform smsao.refuse(function_name, arguments, 'rate_limited', 'PT429',
      pg_catalog.format('rate limit exceeded for %s: at most %s per %s minute(s), try again later',
                        operation_type, lim.max_attempts, lim.window_minutes));
  end if;
end
$$;
revoke all on function smsao.guard_critical(text, text, jsonb) from public, anon, authenticated, service_role;

-- Whether the caller's own account is active: the write policies of user-owned tables ask
-- this, so a suspended, pending or deleted user writes nothing.
create or replace function smsao.is_active_user() returns boolean
  language sql stable security definer
  set search_path = ''
as $$
  select exists (select from public.profiles p where p.user_id = auth.uid() and p.status = 'active')
$$;
revoke all on function smsao.is_active_user() from public, anon, authenticated, service_role;
grant execute on function smsao.is_active_user() to authenticated;

-- ==== sql/triggers/credits.sql ====
create or replace trigger credit_transactions_apply
  after insert on public.credit_transactions referencing new table as new_entries
  for each statement execute function smsao.apply_credit_transaction();

create or replace trigger profiles_record_credit_adjustment
  after update on public.profiles referencing old table as old_profiles new table as new_profiles
  for each statement execute function smsao.record_credit_adjustment();

create or replace trigger profiles_record_initial_credits
  after insert on public.profiles referencing new table as new_profiles
  for each statement execute function smsao.record_initial_credits();

-- ==== sql/triggers/guard_app_writes.sql ====
create or replace trigger profiles_guard_update
  before update on public.profiles
  for each statement execute function smsao.guard_app_write('profile_update');

create or replace trigger contacts_guard_write
  before insert or update or delete on public.contacts
  for each statement execute function smsao.guard_app_write('contact_operation');

create or replace trigger contacts_clear_upsert_mark
  after insert on public.contacts
  for each statement execute function smsao.clear_upsert_mark();

-- ==== sql/triggers/identity.sql ====
create or replace trigger smsao_on_auth_user_created
  after insert on auth.users referencing new table as new_users
  for each statement execute function smsao.handle_new_user();

create or replace trigger profiles_touch_updated_at
  before update on public.profiles
  for each row execute function smsao.touch_updated_at();

-- ==== sql/policies/campaigns.sql ====
alter table public.campaigns enable row level security;
revoke all on table public.campaigns from anon, authenticated, service_role;
grant select, insert, update, delete on table public.campaigns to service_role;
grant select, insert, update, delete on table public.campaigns to authenticated;

-- A user whose account is not active (suspended, pending, deleted) writes nothing.
drop policy if exists campaigns_select on public.campaigns;
create policy campaigns_select on public.campaigns for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
drop policy if exists campaigns_insert_own on public.campaigns;
create policy campaigns_insert_own on public.campaigns for insert to authenticated
  with check (user_id = (select auth.uid()) and (select smsao.is_active_user()));
drop policy if exists campaigns_update_own on public.campaigns;
create policy campaigns_update_own on public.campaigns for update to authenticated
  using (user_id = (select auth.uid()) and (select smsao.is_active_user()))
  with check (user_id = (select auth.uid()));
drop policy if exists campaigns_delete_own on public.campaigns;
create policy campaigns_delete_own on public.campaigns for delete to authenticated
  using (user_id = (select auth.uid()) and (select smsao.is_active_user()));

-- ==== sql/policies/contact_import_jobs.sql ====
alter table public.contact_import_jobs enable row level security;
revoke all on table public.contact_import_jobs from anon, authenticated, service_role;
grant select, insert, update, delete on table public.contact_import_jobs to service_role;
grant select, insert on table public.contact_import_jobs to authenticated;

drop policy if exists contact_import_jobs_select on public.contact_import_jobs;
create policy contact_import_jobs_select on public.contact_import_jobs for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
-- Users with an active account queue their own imports; the backend moves them through
-- their states.
drop policy if exists contact_import_jobs_insert_own on public.contact_import_jobs;
create policy contact_import_jobs_insert_own on public.contact_import_jobs for insert to authenticated
  with check (user_id = (select auth.uid()) and (select smsao.is_active_user()) and status = 'pending'
              and processed_rows = 0 and completed_at is null);

-- ==== sql/policies/hardening_state.sql ====
-- Internal state of revision 0005_hardening (schema smsao, not exposed by PostgREST): only
-- the owner's SECURITY DEFINER functions and a DBA touch it. RLS without policies denies
-- anyone else who might be granted access by mistake.
alter table smsao.rate_limit_keys enable row level security;
revoke all on table smsao.rate_limit_keys from public, anon, authenticated, service_role;
alter table smsao.rate_limit_hits enable row level security;
revoke all on table smsao.rate_limit_hits from public, anon, authenticated, service_role;
alter table smsao.upsert_marks enable row level security;
revoke all on table smsao.upsert_marks from public, anon, authenticated, service_role;
alter table smsao.critical_operations enable row level security;
revoke all on table smsao.critical_operations from public, anon, authenticated, service_role;

-- Sequences, including the identity sequences of public tables: Supabase's default
-- privileges grant them to the app roles; identity columns need no sequence privilege.
do $$
declare
  seq regclass;
begin
  for seq in select c.oid from pg_catalog.pg_class c
             where c.relkind = 'S' and c.relnamespace in ('public'::regnamespace, 'smsao'::regnamespace) loop
    execute pg_catalog.format('revoke all on sequence %s from public, anon, authenticated, service_role', seq);
  end loop;
end
$$;

-- ==== sql/policies/profiles.sql ====
alter table public.profiles enable row level security;
revoke all on table public.profiles from anon, authenticated, service_role;
grant select, insert, update, delete on table public.profiles to service_role;
grant select on table public.profiles to authenticated;
-- Users edit their own name and phone only: credits, status and email are not theirs to set.
grant update (full_name, phone) on table public.profiles to authenticated;

-- Everyone, admins included, reads only their own profile here: other users' names,
-- emails and phones are reached through public.admin_get_user_details(), which writes
-- pii_access_audit; list views use public.admin_list_users(), which carries no PII.
drop policy if exists profiles_select on public.profiles;
create policy profiles_select on public.profiles for select to authenticated
  using (user_id = (select auth.uid()));
drop policy if exists profiles_update_own on public.profiles;
create policy profiles_update_own on public.profiles for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
