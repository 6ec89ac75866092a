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
