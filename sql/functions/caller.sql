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
