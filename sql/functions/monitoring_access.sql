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

-- The critical operations' figures for the dashboard, `/metrics` and `monitor`, which may run
-- as a login granted only service_role. The figures come from sequences and samples that
-- service_role cannot read itself (and need not): these three readers are SECURITY DEFINER,
-- executable by service_role alone, and return exactly what smsao.critical_call_totals(),
-- smsao.critical_calls_since() and smsao.critical_calls_per_hour() return to the owner.
create or replace function smsao.dashboard_call_totals()
  returns table (operation text, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('smsao.dashboard_call_totals');
  return query select t.operation, t.calls, t.errors, t.refusals from smsao.critical_call_totals() t;
end
$$;
revoke all on function smsao.dashboard_call_totals() from public, anon, authenticated, service_role;
grant execute on function smsao.dashboard_call_totals() to service_role;

create or replace function smsao.dashboard_calls_since(since timestamptz)
  returns table (operation text, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('smsao.dashboard_calls_since');
  return query select c.operation, c.calls, c.errors, c.refusals
               from smsao.critical_calls_since(dashboard_calls_since.since) c;
end
$$;
revoke all on function smsao.dashboard_calls_since(timestamptz) from public, anon, authenticated, service_role;
grant execute on function smsao.dashboard_calls_since(timestamptz) to service_role;

create or replace function smsao.dashboard_calls_per_hour(hours integer)
  returns table (hour timestamptz, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('smsao.dashboard_calls_per_hour');
  return query select h.hour, h.calls, h.errors, h.refusals
               from smsao.critical_calls_per_hour(dashboard_calls_per_hour.hours) h;
end
$$;
revoke all on function smsao.dashboard_calls_per_hour(integer) from public, anon, authenticated, service_role;
grant execute on function smsao.dashboard_calls_per_hour(integer) to service_role;
