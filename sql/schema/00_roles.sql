-- The three PostgREST roles. Supabase already has them (and their grants to
-- `authenticator`); elsewhere they are created here. Roles are cluster-wide, so a
-- downgrade leaves them in place for the other databases that may use them.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
    -- The trusted backend: like Supabase's service_role it is not subject to RLS.
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

grant usage on schema public to anon, authenticated, service_role;
