-- Writes one function_call_audit row for the current caller. Argument values under
-- keys that name secrets are replaced, so codes and tokens never reach the audit.
create function smsao.audit_call(
  function_name text, arguments jsonb, outcome text, started_at timestamptz
) returns void
  language sql security definer
  set search_path = ''
as $$
  insert into public.function_call_audit (caller_id, caller_role, function_name, arguments, outcome, duration_ms)
  values (
    smsao.caller_id(),
    smsao.caller_role(),
    function_name,
    coalesce((
      select pg_catalog.jsonb_object_agg(a.key,
               case when a.key ~* '(password|secret|token|code|otp|api_?key|credential)'
                    then '"[redacted]"'::jsonb else a.value end)
      from pg_catalog.jsonb_each(arguments) a), '{}'::jsonb),
    outcome,
    extract(epoch from pg_catalog.clock_timestamp() - started_at) * 1000
  )
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
