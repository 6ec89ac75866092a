-- SMS AO contract tests (pgTAP), 03_session.sql: plain SQL, run alike by `smsao-db verify`,
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

-- Identity and session validation (CONTRACT sections 1 and 3): auth.uid()/role()/jwt() read
-- the request's claims ('' is absent), every user gets a profile, and
-- validate_user_session() is true only for service_role and live sessions of active users.
select plan(21);

select smsao_test.new_user('alice'), smsao_test.new_user('other'), smsao_test.new_user('suspended', status => 'suspended');
select is((select count(*) from public.profiles where user_id = smsao_test.uid('alice')), 1::bigint,
          'a new auth.users row gets its profile from the trigger');
select is((select status from public.profiles where user_id = smsao_test.uid('alice')), 'active',
          'a new profile is active');

create temp table sessions (name text primary key, id uuid not null) on commit drop;
grant select on sessions to anon, authenticated, service_role;
insert into sessions values ('live', gen_random_uuid()), ('expired', gen_random_uuid()), ('foreign', gen_random_uuid());
insert into auth.sessions (id, user_id, not_after) values
  ((select id from sessions where name = 'live'), smsao_test.uid('alice'), now() + interval '1 hour'),
  ((select id from sessions where name = 'expired'), smsao_test.uid('alice'), now() - interval '1 second'),
  ((select id from sessions where name = 'foreign'), smsao_test.uid('other'), null);

select smsao_test.act_as('alice');
select results_eq($$select auth.uid(), auth.role(), auth.jwt() ->> 'sub'$$,
                  format($$values (%L::uuid, 'authenticated'::text, %L::text)$$, smsao_test.uid('alice'), smsao_test.uid('alice')),
                  'auth.uid(), auth.role() and auth.jwt() read the request''s claims');
select ok(public.validate_user_session(), 'an active user''s session is valid');
select smsao_test.act_as('alice', session_id => (select id from sessions where name = 'live'));
select ok(public.validate_user_session(), 'an active user with a live session is valid');
select smsao_test.act_as('alice', session_id => (select id from sessions where name = 'expired'));
select ok(not public.validate_user_session(), 'an expired session is invalid');
select smsao_test.act_as('alice', session_id => (select id from sessions where name = 'foreign'));
select ok(not public.validate_user_session(), 'another user''s session is invalid');
select smsao_test.act_as('alice', session_id => gen_random_uuid());
select ok(not public.validate_user_session(), 'an unknown session is invalid');
select smsao_test.act_as('alice', expires_in => interval '-5 seconds');
select ok(not public.validate_user_session(), 'an expired JWT (exp in the past) is invalid');
select smsao_test.act_as('suspended');
select ok(not public.validate_user_session(), 'a suspended user''s session is invalid');
select smsao_test.act_as_owner();
update public.profiles set status = 'deleted' where user_id = smsao_test.uid('other');
select smsao_test.act_as('other');
select ok(not public.validate_user_session(), 'a deleted user''s session is invalid');
set local request.jwt.claims = '{"sub":"5e6b3a4c-0f52-4d1e-9a57-3c2f1b7d9e10","role":"authenticated"}';
select ok(not public.validate_user_session(), 'a user without a profile is invalid');
set local request.jwt.claims = '{"sub":"not-a-uuid","role":"authenticated"}';
select lives_ok('select public.validate_user_session()', 'a malformed sub is no error');
select ok(not public.validate_user_session(), 'a malformed sub is invalid');
select smsao_test.act_as_service();
select ok(public.validate_user_session(), 'service_role is valid');
select smsao_test.act_as_anon();
select ok(not public.validate_user_session(), 'anon is invalid');
select is(auth.uid(), null, 'anon without claims has no uid');

-- After a transaction the settings read as '' (Supabase): absent, not an error.
select smsao_test.act_as_owner();
set local request.jwt.claims = '';
select ok(auth.uid() is null and auth.role() is null, 'empty claims ('''') read as absent');
set local request.jwt.claims = '{"sub":"00000000-0000-4000-8000-000000000000"}';
select is(auth.uid(), '00000000-0000-4000-8000-000000000000'::uuid, 'auth.uid() reads a sub without a role');

-- has_role: admins by user_roles, false for NULL.
select smsao_test.new_user('admin', admin => true);
select ok(public.has_role(smsao_test.uid('admin'), 'admin'), 'has_role() is true for an admin');
select ok(not public.has_role(smsao_test.uid('alice'), 'admin') and not public.has_role(null, 'admin'),
          'has_role() is false for a user and for NULL');

select * from finish();
rollback;
