-- SMS AO contract tests (pgTAP), 02_rls.sql: plain SQL, run alike by `smsao-db verify`,
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

-- Row-level security per table and role (CONTRACT section 2): a user sees and changes only
-- their own rows, admins read the audits, anon sees nothing; every policy is for
-- `authenticated` and calls (select auth.uid()) once per query, not once per row.
select plan(98);

-- The policies of each table, exactly, and the roles each applies to.
select policies_are('public', t.name, t.policies, 'public.' || t.name || ' has exactly its policies')
  from (values
    ('profiles', array['profiles_select', 'profiles_update_own']),
    ('user_roles', array['user_roles_select']),
    ('sms_configurations', array['sms_configurations_admin']),
    ('credit_requests', array['credit_requests_select']),
    ('credit_transactions', array['credit_transactions_select']),
    ('contacts', array['contacts_own']),
    ('campaigns', array['campaigns_select', 'campaigns_insert_own', 'campaigns_update_own', 'campaigns_delete_own']),
    ('sms_logs', array['sms_logs_select']),
    ('otp_codes', '{}'::name[]),
    ('contact_import_jobs', array['contact_import_jobs_select', 'contact_import_jobs_insert_own']),
    ('admin_audit_logs', array['admin_audit_logs_admin_select']),
    ('pii_access_audit', array['pii_access_audit_admin_select']),
    ('function_call_audit', array['function_call_audit_admin_select']),
    ('system_health_snapshots', array['system_health_snapshots_admin_select']),
    ('system_alerts', array['system_alerts_admin_select', 'system_alerts_admin_ack']),
    ('performance_samples', array['performance_samples_admin_select'])
  ) as t (name, policies);

select policy_roles_are('public', p.tablename, p.policyname, array['authenticated'],
                        'policy ' || p.policyname || ' on public.' || p.tablename || ' applies to authenticated only')
  from (select tablename, policyname from pg_policies
         where schemaname = 'public'
           and tablename in ('profiles', 'user_roles', 'sms_configurations', 'credit_requests', 'credit_transactions',
                             'contacts', 'campaigns', 'sms_logs', 'otp_codes', 'contact_import_jobs', 'admin_audit_logs',
                             'pii_access_audit', 'function_call_audit', 'system_health_snapshots', 'system_alerts',
                             'performance_samples')
         order by 1, 2) p;

select is_empty($$
  select tablename || '.' || policyname from pg_policies
   where schemaname = 'public'
     and regexp_replace(coalesce(qual, '') || ' ' || coalesce(with_check, ''),
                        'SELECT\s+auth\.uid\(\)', '', 'gi') ~* 'auth\.uid\(\)'
$$, 'policies call (select auth.uid()), evaluated once per query, never per row');

-- Users and one row of theirs in every table they own; rows only admins may read.
select smsao_test.new_user('alice'), smsao_test.new_user('bob'), smsao_test.new_user('admin', admin => true),
       smsao_test.new_user('suspended', status => 'suspended');

create table smsao_test.seeded (tbl name, owner text, key text, primary key (tbl, owner));
grant select on smsao_test.seeded to anon, authenticated, service_role;

-- One row owned by the user in every table a user owns (the contract's listed columns only).
create function smsao_test.seed_owned_rows(owner text) returns void language plpgsql as $$
declare
  uid uuid := smsao_test.uid(owner);
  k text;
begin
  insert into smsao_test.seeded values ('profiles', owner, uid::text);
  insert into public.user_roles (user_id, role) values (uid, 'user')
    on conflict (user_id, role) do update set role = excluded.role returning id::text into k;
  insert into smsao_test.seeded values ('user_roles', owner, k);
  insert into public.credit_requests (user_id, amount) values (uid, 10) returning id::text into k;
  insert into smsao_test.seeded values ('credit_requests', owner, k);
  insert into public.credit_transactions (user_id, amount) values (uid, 10) returning id::text into k;
  insert into smsao_test.seeded values ('credit_transactions', owner, k);
  insert into public.contacts (user_id, name, phone) values (uid, 'verify', '+244900000001') returning id::text into k;
  insert into smsao_test.seeded values ('contacts', owner, k);
  insert into public.campaigns (user_id, name, message) values (uid, 'verify', 'hi') returning id::text into k;
  insert into smsao_test.seeded values ('campaigns', owner, k);
  insert into public.sms_logs (user_id, recipient, message, status) values (uid, '+244900000001', 'hi', 'sent')
    returning id::text into k;
  insert into smsao_test.seeded values ('sms_logs', owner, k);
  insert into public.contact_import_jobs (user_id) values (uid) returning id::text into k;
  insert into smsao_test.seeded values ('contact_import_jobs', owner, k);
end $$;

-- Rows no user owns: audits, monitoring, OTPs and gateways.
create function smsao_test.seed_system_rows() returns void language plpgsql as $$
declare
  k text;
begin
  insert into public.admin_audit_logs (action) values ('verify') returning id::text into k;
  insert into smsao_test.seeded values ('admin_audit_logs', 'system', k);
  insert into public.pii_access_audit (table_name) values ('verify') returning id::text into k;
  insert into smsao_test.seeded values ('pii_access_audit', 'system', k);
  insert into public.function_call_audit (function_name, outcome) values ('verify', 'ok') returning id::text into k;
  insert into smsao_test.seeded values ('function_call_audit', 'system', k);
  insert into public.system_health_snapshots (system_status) values ('healthy') returning id::text into k;
  insert into smsao_test.seeded values ('system_health_snapshots', 'system', k);
  insert into public.system_alerts (severity, message) values ('warning', 'verify') returning id::text into k;
  insert into smsao_test.seeded values ('system_alerts', 'system', k);
  insert into public.performance_samples (response_time_ms) values (1) returning id::text into k;
  insert into smsao_test.seeded values ('performance_samples', 'system', k);
  insert into public.otp_codes (phone, code_hash) values ('+244900000001', 'x') returning id::text into k;
  insert into smsao_test.seeded values ('otp_codes', 'system', k);
  insert into public.sms_configurations (gateway_name, sender_id) values ('verify', 'VERIFY') returning id::text into k;
  insert into smsao_test.seeded values ('sms_configurations', 'system', k);
end $$;

-- Whether the current role reads the seeded row (a table it may not read at all: false).
create function smsao_test.reads(tbl name, owner text) returns boolean language plpgsql as $$
declare
  seen boolean;
begin
  execute format('select exists (select from public.%I where %I::text = $1)', tbl,
                 case when tbl = 'profiles' then 'user_id' else 'id' end)
    into seen using (select s.key from smsao_test.seeded s where s.tbl = reads.tbl and s.owner = reads.owner);
  return seen;
exception when insufficient_privilege then
  return false;
end $$;
grant execute on all functions in schema smsao_test to anon, authenticated, service_role;

select smsao_test.seed_owned_rows('alice'), smsao_test.seed_owned_rows('bob'), smsao_test.seed_system_rows();
create temp table owned_tables on commit drop as
  select distinct tbl from smsao_test.seeded where owner = 'alice' order by 1;
grant select on owned_tables to anon, authenticated, service_role;

-- A user reads their own rows and no one else's.
select smsao_test.act_as('alice');
select ok(smsao_test.reads(t.tbl, 'alice'), 'a user reads their own row in public.' || t.tbl) from owned_tables t;
select ok(not smsao_test.reads(t.tbl, 'bob'), 'a user cannot read another user''s row in public.' || t.tbl)
  from owned_tables t;
select ok(not smsao_test.reads(s.tbl, 'system'), 'a user who is not an admin cannot read public.' || s.tbl)
  from (select tbl from smsao_test.seeded where owner = 'system' order by 1) s;

-- A user cannot write another user's rows, nor their own credits or status.
select throws_ok(format($$insert into public.contacts (user_id, phone) values (%L, '+244900000002')$$, smsao_test.uid('bob')),
                 '42501', null, 'a user cannot insert a contact for another user');
select throws_ok(format($$insert into public.campaigns (user_id, name) values (%L, 'x')$$, smsao_test.uid('bob')),
                 '42501', null, 'a user cannot insert a campaign for another user');
update public.contacts set name = 'hijacked' where user_id = smsao_test.uid('bob');
update public.campaigns set name = 'hijacked' where user_id = smsao_test.uid('bob');
delete from public.contacts where user_id = smsao_test.uid('bob');
delete from public.campaigns where user_id = smsao_test.uid('bob');
select throws_ok(format($$update public.profiles set credits = credits + 1000 where user_id = %L$$, smsao_test.uid('alice')),
                 '42501', null, 'a user cannot raise their own credits');
select throws_ok(format($$update public.profiles set status = 'active' where user_id = %L$$, smsao_test.uid('alice')),
                 '42501', null, 'a user cannot set their own status');
select lives_ok(format($$update public.profiles set full_name = 'Alice' where user_id = %L$$, smsao_test.uid('alice')),
                'a user updates their own name');
select smsao_test.act_as_owner();
select results_eq($$select name from public.contacts where user_id = smsao_test.uid('bob')
                    union all select name from public.campaigns where user_id = smsao_test.uid('bob')$$,
                  array['verify', 'verify'],
                  'another user''s contacts and campaigns are neither updated nor deleted by a user');

-- anon reads nothing and writes nothing.
select smsao_test.act_as_anon('198.51.100.7');
select ok(not smsao_test.reads(s.tbl, s.owner), 'anon cannot read public.' || s.tbl)
  from (select tbl, owner from smsao_test.seeded where owner in ('alice', 'system') order by 1) s;
select throws_ok(format($$insert into public.contacts (user_id, phone) values (%L, '+244900000003')$$, smsao_test.uid('alice')),
                 '42501', null, 'anon cannot insert a contact');
select throws_ok(format($$insert into public.campaigns (user_id, name) values (%L, 'x')$$, smsao_test.uid('alice')),
                 '42501', null, 'anon cannot insert a campaign');
select throws_ok(format($$update public.profiles set full_name = 'x' where user_id = %L$$, smsao_test.uid('alice')),
                 '42501', null, 'anon cannot update a profile');

-- Admins (and service_role) read the audit trails.
select smsao_test.act_as('admin');
select ok(smsao_test.reads(t.tbl, 'system'), 'an admin reads public.' || t.tbl)
  from (values ('admin_audit_logs'), ('pii_access_audit'), ('function_call_audit')) t (tbl);
select smsao_test.act_as_service();
select ok(smsao_test.reads(t.tbl, 'system'), 'service_role reads public.' || t.tbl)
  from (values ('admin_audit_logs'), ('pii_access_audit'), ('function_call_audit')) t (tbl);

-- A user whose account is not active writes nothing (CONTRACT section 3).
select smsao_test.act_as('suspended');
select throws_ok(format(q, smsao_test.uid('suspended')), '42501', null, 'a suspended user cannot ' || what)
  from (values
    ($$insert into public.campaigns (user_id, name) values (%L, 'verify')$$, 'create a campaign'),
    ($$insert into public.contact_import_jobs (user_id) values (%L)$$, 'start a contact import'),
    ($$insert into public.contacts (user_id, phone) values (%L, '+244900000009')$$, 'add a contact'),
    ($$update public.profiles set full_name = 'verify' where user_id = %L$$, 'update their profile')
  ) as w (q, what);
select smsao_test.act_as_owner();
select is((select count(*) from public.campaigns where user_id = smsao_test.uid('suspended')), 0::bigint,
          'nothing was written for the suspended user');

select * from finish();
rollback;
