-- SMS AO contract tests (pgTAP), 08_cleanup.sql: plain SQL, run alike by `smsao-db verify`,
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

-- The retention cleanup (CONTRACT section 3): production_data_cleanup deletes exactly past
-- the boundaries (OTPs 2 hours past expiry, audit rows older than 2 years, finished import
-- jobs 30 days after completion) and nothing else; the dry-run report deletes nothing.
select plan(12);

select smsao_test.new_user('alice'), smsao_test.new_user('admin', admin => true);
create temp table seeded (tbl name, id text, fate text, n integer generated always as identity) on commit drop;
grant select on seeded to anon, authenticated, service_role;

create function smsao_test.seed(tbl name, fate text, statement text) returns void language plpgsql as $$
declare
  new_id text;
begin
  execute statement || ' returning id::text' into new_id;
  insert into seeded (tbl, id, fate) values (tbl, new_id, fate);
end $$;

select smsao_test.seed('otp_codes', o.fate, format(
         $$insert into public.otp_codes (phone, code_hash, expires_at) values ('+244900000001', 'x', now() - %L::interval)$$, o.age))
  from (values ('goes', '2 hours 1 minute'), ('stays', '1 hour 59 minutes'), ('stays', '-10 minutes')) o (fate, age);
select smsao_test.seed(a.tbl, g.fate, format('insert into public.%I (%s, created_at) values (%s, now() - %L::interval)',
                                             a.tbl, a.cols, a.vals, g.age))
  from (values ('admin_audit_logs', 'action', $$'verify'$$), ('pii_access_audit', 'table_name', $$'verify'$$),
               ('function_call_audit', 'function_name, outcome', $$'verify', 'ok'$$)) a (tbl, cols, vals)
 cross join (values ('goes', '2 years 1 day'), ('stays', '2 years -1 day')) g (fate, age);
select smsao_test.seed('contact_import_jobs', j.fate, format(
         $$insert into public.contact_import_jobs (user_id, status, created_at, completed_at)
           values (%L, %L, now() - interval '90 days', now() - %L::interval)$$, smsao_test.uid('alice'), j.status, j.age))
  from (values ('goes', 'completed', '31 days'), ('goes', 'failed', '31 days'),
               ('stays', 'completed', '29 days'), ('stays', 'failed', '29 days')) j (fate, status, age);
select smsao_test.seed('contact_import_jobs', 'stays', format(
         $$insert into public.contact_import_jobs (user_id, status, created_at) values (%L, %L, now() - interval '90 days')$$,
         smsao_test.uid('alice'), s))
  from unnest(array['processing', 'pending']) s;
-- Old rows of tables the cleanup never touches.
select smsao_test.seed('sms_logs', 'stays', format(
         $$insert into public.sms_logs (user_id, recipient, status, created_at) values (%L, '+244900000001', 'sent', now() - interval '3 years')$$,
         smsao_test.uid('alice')));
select smsao_test.seed('contacts', 'stays', format(
         $$insert into public.contacts (user_id, phone, created_at) values (%L, '+244900000001', now() - interval '3 years')$$,
         smsao_test.uid('alice')));

create function smsao_test.present(tbl name, id text) returns boolean language plpgsql as $$
declare
  found_it boolean;
begin
  execute format('select exists (select from public.%I where id::text = $1)', tbl) into found_it using id;
  return found_it;
end $$;

-- Who may run it.
select smsao_test.act_as('alice');
select throws_ok('select public.production_data_cleanup()', '42501', null, 'a user who is not an admin cannot run the cleanup');
select smsao_test.act_as_anon();
select throws_ok('select public.production_data_cleanup()', '42501', null, 'anon cannot run the cleanup');

-- The dry run counts and deletes nothing.
select smsao_test.act_as('admin');
select lives_ok('select public.production_data_cleanup_report()', 'an admin reads the cleanup report');
select smsao_test.act_as_owner();
select is((select count(*) from seeded where not smsao_test.present(tbl, id)), 0::bigint, 'the cleanup report deletes nothing');

select smsao_test.act_as_service();
create temp table outcome on commit drop as select public.production_data_cleanup() as deleted;
select smsao_test.act_as_owner();
select is_empty($$select tbl || ' ' || id from seeded where fate = 'goes' and smsao_test.present(tbl, id)$$,
                'production_data_cleanup deletes every seeded row past its retention');
select is_empty($$select tbl || ' ' || id from seeded where fate = 'stays' and not smsao_test.present(tbl, id)$$,
                'production_data_cleanup keeps every seeded row inside its retention, and rows of other tables');
select ok(not smsao_test.present('otp_codes', (select id from seeded where tbl = 'otp_codes' and fate = 'goes')),
          'an OTP 2h01 past expiry goes');
select ok(smsao_test.present('otp_codes', (select id from seeded where tbl = 'otp_codes' and fate = 'stays' order by n limit 1)),
          'an OTP 1h59 past expiry stays');
select is_empty($$select s.tbl from seeded s where s.tbl in ('admin_audit_logs', 'pii_access_audit', 'function_call_audit')
                   and smsao_test.present(s.tbl, s.id) <> (s.fate = 'stays')$$,
                'audit rows older than 2 years go, younger stay (all three audit tables)');
select is_empty($$select s.id from seeded s where s.tbl = 'contact_import_jobs'
                   and smsao_test.present(s.tbl, s.id) <> (s.fate = 'stays')$$,
                'finished import jobs go 30 days after completion; running and pending ones stay');
select ok((select deleted >= (select count(*) from seeded where fate = 'goes') from outcome),
          'production_data_cleanup returns how many rows it deleted (at least the seeded ones)');
select smsao_test.act_as('admin');
select lives_ok('select public.production_data_cleanup()', 'an admin runs the cleanup');

select * from finish();
rollback;
