-- SMS AO contract tests (pgTAP), 10_cache_notifications.sql: plain SQL, run alike by `smsao-db verify`,
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

-- Cache notifications (CONTRACT section 6): statement-level AFTER triggers on the tables
-- the app caches send NOTIFY cache_invalidation with the keys a statement made stale.
-- A notification leaves only at commit and this file rolls back, so the payloads
-- themselves are tested by the package's own suite (tests/test_cache_invalidation.py);
-- here: every trigger is in place, enabled, statement-level, with the right key templates.
select plan(8);

select set_eq(format($$select t.tgname::text as name, t.tgfoid::regproc::text as function, t.tgtype::integer,
                              t.tgenabled::text as enabled, encode(t.tgargs, 'escape') as args
                         from pg_trigger t where t.tgrelid = 'public.%1$s'::regclass and t.tgname like '%%\_cache\_%%'$$, c.tbl),
              format($$select %1$L || '_cache_' || e.event as name, 'smsao.cache_invalidation_on_' || e.event as function, e.tgtype,
                              'O' as enabled, %2$L as args
                         from (values ('insert', 4), ('delete', 8), ('update', 16), ('truncate', 32)) e (event, tgtype)$$,
                     c.tbl, array_to_string(c.templates, E'\\000') || E'\\000'),
              'public.' || c.tbl || ' notifies cache_invalidation after every statement (insert, update, delete, truncate) with '
              || array_to_string(c.templates, ', '))
  from (values
    ('profiles', array['profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}']),
    ('credit_transactions', array['credits:{user_id}', 'dashboard_stats:{user_id}']),
    ('contacts', array['contacts:{user_id}', 'dashboard_stats:{user_id}']),
    ('campaigns', array['campaigns:{user_id}', 'dashboard_stats:{user_id}']),
    ('sms_logs', array['sms_logs:{user_id}:*', 'dashboard_stats:{user_id}'])
  ) as c (tbl, templates);

-- The triggers run with the writer's rights: users and the backend write these tables, anon never.
select function_privs_are('smsao', 'send_cache_invalidation', array['uuid[]', 'text[]'], r.role, r.privs)
  from (values ('anon', '{}'::text[]), ('authenticated', array['EXECUTE']), ('service_role', array['EXECUTE'])) r (role, privs);

select * from finish();
rollback;
