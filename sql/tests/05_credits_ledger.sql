-- SMS AO contract tests (pgTAP), 05_credits_ledger.sql: plain SQL, run alike by `smsao-db verify`,
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

-- Credits and the ledger (CONTRACT sections 2 and 3): request_credits, approval and
-- rejection by an admin (never of their own request), credits added once with one ledger
-- row, and profiles.credits always equal to the sum of the user's ledger.
select plan(32);

select smsao_test.new_user('alice'), smsao_test.new_user('bob'), smsao_test.new_user('admin', admin => true),
       smsao_test.new_user('suspended', status => 'suspended');
create temp table requests (name text primary key, id uuid) on commit drop;
grant all on requests to anon, authenticated, service_role;

-- Requesting credits.
select smsao_test.act_as('alice');
insert into requests values ('first', public.request_credits(40)), ('second', public.request_credits(15)),
                            ('third', public.request_credits(5));
select smsao_test.act_as_owner();
select results_eq($$select user_id, amount, status from public.credit_requests
                     where id in (select id from requests) order by amount desc$$,
                  format($$values (%1$L::uuid, 40, 'pending'::text), (%1$L, 15, 'pending'), (%1$L, 5, 'pending')$$,
                         smsao_test.uid('alice')),
                  'request_credits stores a pending request of the caller for the amount');
select smsao_test.act_as('alice');
select throws_ok('select public.request_credits(0)', '22023', null, 'request_credits(0) raises 22023');
select throws_ok('select public.request_credits(-5)', '22023', null, 'a negative amount raises 22023');
select throws_ok('select public.request_credits(null)', '22023', null, 'a NULL amount raises 22023');
select smsao_test.act_as('suspended');
select throws_ok('select public.request_credits(10)', '42501', null, 'a suspended user cannot request credits');
select smsao_test.act_as_anon();
select throws_ok('select public.request_credits(10)', '42501', null, 'anon cannot request credits');

-- Approval: admins only, credits added once, one ledger row, audited.
select smsao_test.act_as('bob');
select throws_ok(format('select public.approve_credit_request(%L)', (select id from requests where name = 'first')),
                 '42501', null, 'a user who is not an admin cannot approve a credit request');
select throws_ok(format('select public.reject_credit_request(%L, %L)', (select id from requests where name = 'first'), 'no'),
                 '42501', null, 'a user who is not an admin cannot reject a credit request');
select smsao_test.act_as('admin');
select lives_ok(format('select public.approve_credit_request(%L)', (select id from requests where name = 'first')),
                'an admin approves a pending request');
select smsao_test.act_as_owner();
select is((select credits from public.profiles where user_id = smsao_test.uid('alice')), 40,
          'approving 40 credits adds 40 to the balance');
select results_eq(format($$select amount from public.credit_transactions where credit_request_id = %L$$,
                         (select id from requests where name = 'first')),
                  array[40], 'the approval writes exactly one ledger row for the request');
select results_eq(format($$select status, processed_by, processed_at is not null from public.credit_requests where id = %L$$,
                         (select id from requests where name = 'first')),
                  format($$values ('approved'::text, %L::uuid, true)$$, smsao_test.uid('admin')),
                  'the request is approved, by the admin, with a time');
select is((select count(*) from public.admin_audit_logs where admin_id = smsao_test.uid('admin')
             and action = 'approve_credit_request' and target_id = (select id::text from requests where name = 'first')),
          1::bigint, 'the approval is recorded in admin_audit_logs');

select smsao_test.act_as('admin');
select throws_ok(format('select public.approve_credit_request(%L)', (select id from requests where name = 'first')),
                 '55000', null, 'approving a request twice raises 55000');
select throws_ok(format('select public.reject_credit_request(%L, %L)', (select id from requests where name = 'first'), 'late'),
                 '55000', null, 'rejecting an approved request raises 55000');
select throws_ok(format('select public.approve_credit_request(%L)', gen_random_uuid()),
                 '22023', null, 'approving an unknown request raises 22023');
select throws_ok('select public.approve_credit_request(null)', '22023', null, 'approving NULL raises 22023');
select lives_ok(format('select public.reject_credit_request(%L, %L)', (select id from requests where name = 'second'), 'verify'),
                'an admin rejects a pending request');
select smsao_test.act_as_service();
select lives_ok(format('select public.approve_credit_request(%L)', (select id from requests where name = 'third')),
                'service_role approves a pending request');
select smsao_test.act_as_owner();
select results_eq($$select r.amount, r.status, (select count(*) from public.credit_transactions t where t.credit_request_id = r.id)
                     from public.credit_requests r where r.id in (select id from requests) order by r.amount desc$$,
                  $$values (40, 'approved'::text, 1::bigint), (15, 'rejected', 0), (5, 'approved', 1)$$,
                  'one ledger row per approved request, none for a rejected one');
select is((select credits from public.profiles where user_id = smsao_test.uid('alice')), 45,
          'the balance is the sum of the approved requests; a second approval changed nothing');
select is((select count(*) from public.admin_audit_logs where action = 'reject_credit_request'
             and target_id = (select id::text from requests where name = 'second')), 1::bigint,
          'the rejection is recorded in admin_audit_logs');

-- An admin never decides their own request.
select smsao_test.act_as('admin');
insert into requests values ('own', public.request_credits(1000));
select throws_ok(format('select public.approve_credit_request(%L)', (select id from requests where name = 'own')),
                 '42501', null, 'an admin cannot approve their own credit request');
select throws_ok(format('select public.reject_credit_request(%L, %L)', (select id from requests where name = 'own'), 'mine'),
                 '42501', null, 'an admin cannot reject their own credit request');
select smsao_test.act_as_owner();
select is((select status from public.credit_requests where id = (select id from requests where name = 'own')), 'pending',
          'the admin''s own request stays pending');

-- The ledger: profiles.credits always equals the sum of the user's credit_transactions.
select smsao_test.act_as('alice');
select throws_ok(format('insert into public.credit_transactions (user_id, amount) values (%L, 100)', smsao_test.uid('alice')),
                 '42501', null, 'a user cannot write the ledger');
select smsao_test.act_as_service();
insert into public.credit_transactions (user_id, amount)
select smsao_test.uid(u), a from (values ('alice', 100), ('bob', 30), ('alice', -20), ('bob', 12)) v (u, a);
update public.profiles set credits = credits + 8 where user_id = smsao_test.uid('bob');
select smsao_test.act_as_owner();
select results_eq($$select p.user_id, p.credits from public.profiles p
                     where p.user_id in (select id from smsao_test.users where name in ('alice', 'bob')) order by 1$$,
                  $$select u.id, coalesce((select sum(t.amount)::integer from public.credit_transactions t where t.user_id = u.id), 0)
                      from smsao_test.users u where u.name in ('alice', 'bob') order by 1$$,
                  'profiles.credits equals the sum of the user''s ledger after ledger inserts and a direct adjustment');
select results_eq($$select credits from public.profiles where user_id = smsao_test.uid('alice')
                    union all select credits from public.profiles where user_id = smsao_test.uid('bob')$$,
                  array[125, 50], 'ledger rows move the balances (45 + 100 - 20, and 30 + 12 + 8)');
select is((select count(*) from public.credit_transactions where user_id = smsao_test.uid('bob') and amount = 8),
          1::bigint, 'a direct change of credits by the backend is recorded as a ledger row');
select throws_ok(format('insert into public.credit_transactions (user_id, amount) values (%L, -1000)', smsao_test.uid('bob')),
                 '23514', null, 'a ledger row that would make a balance negative is refused');
select set_eq($$select p.user_id, p.credits::bigint from public.profiles p
                 where p.user_id in (select id from smsao_test.users)$$,
              $$select u.id, coalesce((select sum(t.amount) from public.credit_transactions t where t.user_id = u.id), 0)::bigint
                  from smsao_test.users u$$,
              'every test user''s balance equals their ledger');
select smsao_test.act_as('bob');
select throws_ok(format('update public.profiles set credits = 1000000 where user_id = %L', smsao_test.uid('bob')),
                 '42501', null, 'a user cannot set their own balance');

select * from finish();
rollback;
