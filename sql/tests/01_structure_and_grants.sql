-- SMS AO contract tests (pgTAP), 01_structure_and_grants.sql: plain SQL, run alike by `smsao-db verify`,
-- `pg_prove -d "$DATABASE_URL" "$(smsao-db verify --path)"/*.sql` and `supabase test db`.
begin;
-- ---- preamble: the same in every file of sql/tests (tests/test_verify.py checks it) ----
-- One transaction, rolled back at the end: what this file creates (pgTAP when it is
-- absent, the helpers in schema smsao_test, its users and rows) vanishes with it.
set local lock_timeout = '5s';  -- this may be production: never queue long behind the app
set local statement_timeout = '120s';
set local client_min_messages = warning;
create schema smsao_test;
do $preamble$
declare
  tap_schema name;
begin
  -- A pgTAP installed beforehand, in any schema, is used as it is. (Where the server has
  -- no pgTAP to create, `smsao-db verify` loads pgTAP's script into smsao_test_pgtap first.)
  if not exists (select from pg_catalog.pg_extension where extname = 'pgtap')
     and pg_catalog.to_regnamespace('smsao_test_pgtap') is null then
    create schema smsao_test_pgtap;
    create extension pgtap with schema smsao_test_pgtap;
  end if;
  tap_schema := coalesce((select e.extnamespace::regnamespace::name from pg_catalog.pg_extension e
                           where e.extname = 'pgtap'), 'smsao_test_pgtap');
  execute pg_catalog.format('grant usage on schema %I, smsao_test to anon, authenticated, service_role',
                            tap_schema);
  perform pg_catalog.set_config('search_path',
    pg_catalog.format('pg_catalog, %I, smsao_test', tap_schema), true);
  -- The calls this transaction provokes are not production's figures (sql/schema/60_verify.sql).
  if pg_catalog.to_regclass('smsao.verify_runs') is not null then
    insert into smsao.verify_runs default values;
  end if;
end
$preamble$;

-- Users by name, created as the auth service creates them (the profile comes from the trigger).
create table smsao_test.users (name text primary key, id uuid not null unique);
grant select on smsao_test.users to anon, authenticated, service_role;

create function smsao_test.new_user(name text, status text default 'active', admin boolean default false)
  returns void language plpgsql as $$
declare
  uid uuid := pg_catalog.gen_random_uuid();
begin
  insert into auth.users (id, email) values (uid, 'verify-' || uid || '@verify.invalid');
  insert into smsao_test.users values (new_user.name, uid);
  if status <> 'active' then
    update public.profiles p set status = new_user.status where p.user_id = uid;
  end if;
  if admin then
    insert into public.user_roles (user_id, role) values (uid, 'admin');
  end if;
end $$;

create function smsao_test.uid(name text) returns uuid language sql stable as $$
  select u.id from smsao_test.users u where u.name = uid.name
$$;

-- Acting as the app does (CONTRACT section 1): the role and the JWT claims, for the rest of
-- the transaction or until smsao_test.act_as_owner().
create function smsao_test.act_as(name text, session_id uuid default null,
                                  expires_in interval default '1 hour') returns void
  language plpgsql as $$
begin
  perform pg_catalog.set_config('role', 'authenticated', true);
  perform pg_catalog.set_config('request.jwt.claims', pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'sub', smsao_test.uid(name), 'role', 'authenticated', 'session_id', session_id,
    'exp', pg_catalog.floor(extract(epoch from pg_catalog.now() + expires_in))::bigint))::text, true);
  perform pg_catalog.set_config('request.headers', '', true);
end $$;

create function smsao_test.act_as_anon(forwarded_for text default null) returns void language plpgsql as $$
begin
  perform pg_catalog.set_config('role', 'anon', true);
  perform pg_catalog.set_config('request.jwt.claims', '', true);
  perform pg_catalog.set_config('request.headers', case when forwarded_for is null then ''
    else pg_catalog.jsonb_build_object('x-forwarded-for', forwarded_for)::text end, true);
end $$;

create function smsao_test.act_as_service() returns void language plpgsql as $$
begin
  perform pg_catalog.set_config('role', 'service_role', true);
  perform pg_catalog.set_config('request.jwt.claims', '{"role":"service_role"}', true);
  perform pg_catalog.set_config('request.headers', '', true);
end $$;

-- Back to the login that runs the file (the owner or a superuser), with no claims.
create function smsao_test.act_as_owner() returns void language plpgsql as $$
begin
  perform pg_catalog.set_config('role', 'none', true);
  perform pg_catalog.set_config('request.jwt.claims', '', true);
  perform pg_catalog.set_config('request.headers', '', true);
end $$;
grant execute on all functions in schema smsao_test to anon, authenticated, service_role;
-- ---- end of preamble ----

-- Structure and grants: the roles, the contract's tables with RLS on, and who may execute
-- each function and touch each table (CONTRACT sections 1-3). On a Supabase database the
-- default privileges grant everything to the app roles: these must hold there too.
select plan(142);

select has_role(r, 'role ' || r || ' exists') from unnest(array['anon', 'authenticated', 'service_role']) r;

-- CONTRACT section 2: every table exists and has row-level security enabled.
create temp table contract_tables (name name primary key) on commit drop;
insert into contract_tables values ('profiles'), ('user_roles'), ('sms_configurations'),
  ('credit_requests'), ('credit_transactions'), ('contacts'), ('campaigns'), ('sms_logs'),
  ('otp_codes'), ('contact_import_jobs'), ('admin_audit_logs'), ('pii_access_audit'),
  ('function_call_audit'), ('system_health_snapshots'), ('system_alerts'), ('performance_samples');
grant select on contract_tables to anon, authenticated, service_role;

select has_table('public', t.name, 'table public.' || t.name || ' exists') from (select * from contract_tables order by 1) t;
select ok(coalesce((select c.relrowsecurity from pg_class c
                     where c.oid = pg_catalog.to_regclass('public.' || t.name)), false),
          'RLS is enabled on public.' || t.name)
  from (select * from contract_tables order by 1) t;

-- CONTRACT section 3: EXECUTE granted to exactly these roles (admins are `authenticated`
-- callers that the function itself checks), never to PUBLIC.
select function_privs_are('public', f.name, f.args, r.role,
                          case when r.role = any(f.roles) then array['EXECUTE'] else '{}'::text[] end)
  from (values
    ('production_system_health_check', '{}'::text[], array['authenticated', 'service_role']),
    ('production_data_cleanup', '{}', array['authenticated', 'service_role']),
    ('production_data_cleanup_report', '{}', array['authenticated', 'service_role']),
    ('enhanced_security_rate_limit', array['text', 'integer', 'integer'], array['anon', 'authenticated', 'service_role']),
    ('validate_user_session', '{}', array['anon', 'authenticated', 'service_role']),
    ('has_role', array['uuid', 'public.app_role'], array['authenticated', 'service_role']),
    ('request_credits', array['integer'], array['authenticated']),
    ('approve_credit_request', array['uuid'], array['authenticated', 'service_role']),
    ('reject_credit_request', array['uuid', 'text'], array['authenticated', 'service_role']),
    ('admin_set_user_status', array['uuid', 'text'], array['authenticated', 'service_role']),
    ('admin_get_user_details', array['uuid'], array['authenticated', 'service_role']),
    ('admin_list_users', array['integer', 'integer'], array['authenticated', 'service_role']),
    ('record_health_snapshot', '{}', array['service_role']),
    ('record_performance_sample', '{}', array['service_role'])
  ) as f (name, args, roles)
  cross join (values ('anon'), ('authenticated'), ('service_role'), ('public')) as r (role);

-- Table privileges of each app role (rows within them are RLS's business, 02_rls.sql).
select table_privs_are('public', t.name, t.role, t.privs,
                       'role ' || t.role || ' holds exactly ' || coalesce(nullif(array_to_string(t.privs, ', '), ''), 'no privileges')
                       || ' on public.' || t.name)
  from (values
    ('profiles', 'authenticated', array['SELECT']),
    ('profiles', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('user_roles', 'authenticated', array['SELECT']),
    ('user_roles', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('sms_configurations', 'authenticated', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('sms_configurations', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('credit_requests', 'authenticated', array['SELECT']),
    ('credit_requests', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('credit_transactions', 'authenticated', array['SELECT']),
    ('credit_transactions', 'service_role', array['SELECT', 'INSERT']),
    ('contacts', 'authenticated', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('contacts', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('campaigns', 'authenticated', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('campaigns', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('sms_logs', 'authenticated', array['SELECT']),
    ('sms_logs', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('otp_codes', 'authenticated', '{}'::text[]),
    ('otp_codes', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('contact_import_jobs', 'authenticated', array['SELECT', 'INSERT']),
    ('contact_import_jobs', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('admin_audit_logs', 'authenticated', array['SELECT']),
    ('admin_audit_logs', 'service_role', array['SELECT', 'INSERT']),
    ('pii_access_audit', 'authenticated', array['SELECT']),
    ('pii_access_audit', 'service_role', array['SELECT', 'INSERT']),
    ('function_call_audit', 'authenticated', array['SELECT']),
    ('function_call_audit', 'service_role', array['SELECT', 'INSERT']),
    ('system_health_snapshots', 'authenticated', array['SELECT']),
    ('system_health_snapshots', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('system_alerts', 'authenticated', array['SELECT']),
    ('system_alerts', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE']),
    ('performance_samples', 'authenticated', array['SELECT']),
    ('performance_samples', 'service_role', array['SELECT', 'INSERT', 'UPDATE', 'DELETE'])
  ) as t (name, role, privs)
union all
select table_privs_are('public', t.name, 'anon', '{}'::text[],
                       'role anon holds no privileges on public.' || t.name)
  from (select * from contract_tables order by 1) t;

-- The package's own state (schema smsao) is for its SECURITY DEFINER functions and DBAs.
select is_empty($$
  select format('%s: %s %s', r.role, p.priv, c.oid::regclass)
    from pg_class c
   cross join (values ('anon'), ('authenticated'), ('service_role'), ('public')) r (role)
   cross join (values ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE')) p (priv)
   where c.relnamespace = 'smsao'::regnamespace and c.relkind in ('r', 'p', 'v', 'm')
     and has_table_privilege(r.role, c.oid, p.priv)
$$, 'no app role (nor PUBLIC) holds a privilege on a table of schema smsao');

select is_empty($$
  select p.oid::regprocedure::text
    from pg_proc p
   where (p.pronamespace = 'smsao'::regnamespace or (p.pronamespace = 'public'::regnamespace and p.prosecdef))
     and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
     and (p.proacl is null or exists (select from aclexplode(p.proacl) a
                                       where a.grantee = 0 and a.privilege_type = 'EXECUTE'))
$$, 'EXECUTE on the package''s functions is not granted to PUBLIC');

-- Functions only: a procedure that commits cannot carry a SET clause (it qualifies names).
select is_empty($$
  select p.oid::regprocedure::text
    from pg_proc p
   where (p.pronamespace = 'smsao'::regnamespace or (p.pronamespace = 'public'::regnamespace and p.prosecdef))
     and p.prokind = 'f'
     and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
     and not exists (select from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')
$$, 'every package function pins search_path');

select * from finish();
rollback;
