-- Frozen by scripts/freeze_sql.py for revision 0008_pgtap. Do not edit.

-- ==== sql/schema/60_verify.sql ====
-- Revision 0008_pgtap: the mark of a verify run (`smsao-db verify`, sql/tests/*.sql).
-- The critical operations count their calls, errors and refusals in sequences, which a
-- rollback does not undo (sql/schema/40_hardening.sql). The package's tests provoke
-- refusals and errors on purpose inside a transaction that is rolled back; counted, they
-- would show in production's error rate. So each test file inserts one row here, inside its
-- transaction, and smsao.count_call / smsao.count_failure count nothing while that
-- transaction's own row is visible to it. No other transaction sees an uncommitted row, a
-- row that was committed by mistake names another transaction id, and no app role may
-- insert here: no real caller can hide its figures this way.
create table smsao.verify_runs (
  xact_id    xid8 primary key default pg_catalog.pg_current_xact_id(),
  started_at timestamptz not null default pg_catalog.now()
);
comment on table smsao.verify_runs is
  'Marks the transaction of a verify run (sql/tests): its provoked calls are not counted. Owner only; always empty outside a run.';

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

-- Whether this transaction is a verify run's: its own row in smsao.verify_runs. A run has
-- written its mark, so it has a transaction id; most calls come before their transaction
-- writes anything (pg_current_xact_id_if_assigned() is NULL and never assigns one), and
-- then no query runs at all. Otherwise the table is empty outside a run (a rolled-back row
-- is invisible): a scan of no rows. The transaction id match keeps a row committed by
-- mistake from muting other callers.
create or replace function smsao.in_verify_run() returns boolean
  language plpgsql stable
  set search_path = ''
as $$
declare
  current_xact xid8 := pg_catalog.pg_current_xact_id_if_assigned();
begin
  if current_xact is null then
    return false;
  end if;
  return exists (select from smsao.verify_runs v where v.xact_id = current_xact);
end
$$;
revoke all on function smsao.in_verify_run() from public, anon, authenticated, service_role;

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
-- counts it in a sequence (smsao.count_failure), which the rollback does not undo. Neither
-- for a verify run's provoked refusals (smsao.in_verify_run()).
create or replace function smsao.refuse(
  function_name text, arguments jsonb, outcome text, errcode text, message text
) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if not smsao.in_verify_run() then
    raise log 'smsao refusal: %', pg_catalog.jsonb_build_object(
      'function', function_name, 'outcome', outcome, 'caller_id', smsao.caller_id(),
      'caller_role', smsao.caller_role(), 'arguments', smsao.redact_arguments(arguments), 'message', message);
  end if;
  raise exception using errcode = refuse.errcode, message = refuse.message;
end
$$;
revoke all on function smsao.refuse(text, jsonb, text, text, text) from public, anon, authenticated, service_role;

-- Call counters of the critical operations (sequences, see sql/schema/40_hardening.sql).
-- Every entry point counts its call first and, in its exception handler, the way it
-- failed: a refusal (42501 denied, PT429 rate limited) or any other error.
-- Not inside a verify run: its transaction marked itself in smsao.verify_runs
-- (sql/schema/60_verify.sql), and the calls it provokes are not production's figures.
create or replace function smsao.count_call(operation text) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if smsao.in_verify_run() then
    return;
  end if;
  perform pg_catalog.nextval(('smsao.rpc_' || operation || '_calls')::regclass);
end
$$;
revoke all on function smsao.count_call(text) from public, anon, authenticated, service_role;

create or replace function smsao.count_failure(operation text, failed_with text) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if smsao.in_verify_run() then
    return;
  end if;
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

-- ==== sql/policies/verify_runs.sql ====
-- Owner only: a verify run connects as the owner or a superuser. RLS without policies
-- denies anyone who might be granted access by mistake.
alter table smsao.verify_runs enable row level security;
revoke all on table smsao.verify_runs from public, anon, authenticated, service_role;
