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
