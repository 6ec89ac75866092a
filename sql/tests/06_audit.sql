-- SMS AO contract tests (pgTAP), 06_audit.sql: plain SQL, run alike by `smsao-db verify`,
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

-- Audit (CONTRACT sections 2 and 3): the critical operations leave their audit rows, PII
-- reads are recorded, secrets are redacted, and the three audit trails are append-only for
-- every role the app uses (the owner included, but for the retention cleanup).
select plan(51);

select smsao_test.new_user('alice'), smsao_test.new_user('target'), smsao_test.new_user('admin', admin => true);
update public.profiles set phone = '+244900000042' where user_id = smsao_test.uid('target');

-- request_credits: one function_call_audit row, arguments kept.
select smsao_test.act_as('alice');
select ok(public.request_credits(25) is not null, 'an active user requests credits');
select smsao_test.act_as_owner();
select results_eq(format($$select caller_role, outcome, (arguments ->> 'amount')::integer from public.function_call_audit
                            where caller_id = %L and function_name = 'request_credits'$$, smsao_test.uid('alice')),
                  $$values ('authenticated'::text, 'ok'::text, 25)$$,
                  'request_credits leaves one function_call_audit row (role, outcome, arguments)');

-- Reading a user's PII leaves a pii_access_audit row.
select smsao_test.act_as('admin');
select ok((select d ? 'email' and d ? 'phone' from public.admin_get_user_details(smsao_test.uid('target')) d),
          'admin_get_user_details returns the email and the phone');
select smsao_test.act_as_owner();
select is((select count(*) from public.pii_access_audit where accessor_id = smsao_test.uid('admin')
             and subject_user_id = smsao_test.uid('target')), 1::bigint,
          'reading a user''s details leaves one pii_access_audit row');
select smsao_test.act_as('alice');
select throws_ok(format('select public.admin_get_user_details(%L)', smsao_test.uid('target')), '42501', null,
                 'a user who is not an admin cannot read another user''s details');
select throws_ok('select public.admin_list_users(10, 1)', '42501', null, 'a user who is not an admin cannot list users');
select smsao_test.act_as_anon();
select throws_ok(format('select public.admin_get_user_details(%L)', smsao_test.uid('target')), '42501', null,
                 'anon cannot read a user''s details');

-- admin_set_user_status: changes the status, records old and new values.
select smsao_test.act_as('admin');
select lives_ok(format('select public.admin_set_user_status(%L, %L)', smsao_test.uid('target'), 'suspended'),
                'an admin suspends a user');
select throws_ok(format('select public.admin_set_user_status(%L, %L)', smsao_test.uid('target'), 'banished'), '22023', null,
                 'an unknown status raises 22023');
select throws_ok(format('select public.admin_set_user_status(%L, %L)', smsao_test.uid('admin'), 'suspended'), '22023', null,
                 'an admin cannot change their own status');
select throws_ok(format('select public.admin_set_user_status(null, %L)', 'active'), '22023', null, 'a NULL user_id raises 22023');
select smsao_test.act_as_owner();
select results_eq(format($$select p.status, a.old_values ->> 'status', a.new_values ->> 'status'
                            from public.profiles p join public.admin_audit_logs a on a.target_id = p.user_id::text
                           where p.user_id = %L and a.action = 'admin_set_user_status'$$, smsao_test.uid('target')),
                  $$values ('suspended'::text, 'active'::text, 'suspended'::text)$$,
                  'the status changed and admin_audit_logs holds the old and the new value');
select smsao_test.act_as('alice');
select throws_ok(format('select public.admin_set_user_status(%L, %L)', smsao_test.uid('target'), 'active'), '42501', null,
                 'a user who is not an admin cannot change a status');

-- Secrets never reach the audit or the log.
select smsao_test.act_as_owner();
select is(smsao.redact_arguments('{"code": "123456", "api_key": "k", "password": "p", "amount": 5}'),
          '{"code": "[redacted]", "api_key": "[redacted]", "password": "[redacted]", "amount": 5}'::jsonb,
          'arguments that name secrets are redacted before they are stored or logged');

-- Append-only: no app role, and not the owner, updates, deletes or truncates an audit row.
create temp table audit_rows (tbl name primary key, id bigint) on commit drop;
grant select on audit_rows to anon, authenticated, service_role;
with a as (insert into public.admin_audit_logs (action) values ('verify') returning id),
     p as (insert into public.pii_access_audit (table_name) values ('verify') returning id),
     f as (insert into public.function_call_audit (function_name, outcome) values ('verify', 'ok') returning id)
insert into audit_rows select 'admin_audit_logs', id from a union all select 'pii_access_audit', id from p
                       union all select 'function_call_audit', id from f;

create function smsao_test.refuses_change(who text, tbl name, verb text) returns text language plpgsql as $$
declare
  statement text := case verb
    when 'update' then format('update public.%I set created_at = created_at where id = %s', tbl,
                              (select a.id from audit_rows a where a.tbl = refuses_change.tbl))
    when 'delete' then format('delete from public.%I where id = %s', tbl,
                              (select a.id from audit_rows a where a.tbl = refuses_change.tbl))
    else format('truncate public.%I', tbl) end;
begin
  case who
    when 'anon' then perform smsao_test.act_as_anon();
    when 'service_role' then perform smsao_test.act_as_service();
    when 'owner' then perform smsao_test.act_as_owner();
    else perform smsao_test.act_as(who);
  end case;
  return throws_ok(statement, '42501', null, format('%s cannot %s public.%s (audit trails are append-only)', who, verb, tbl));
end $$;
grant execute on all functions in schema smsao_test to anon, authenticated, service_role;
select smsao_test.refuses_change(w.who, t.tbl, v.verb)
  from (values ('anon'), ('admin'), ('service_role'), ('owner')) w (who)
 cross join (values ('admin_audit_logs'), ('pii_access_audit'), ('function_call_audit')) t (tbl)
 cross join (values ('update'), ('delete'), ('truncate')) v (verb)
 where not (w.who = 'owner' and v.verb = 'truncate');
select smsao_test.act_as_owner();
select is((select count(*) from audit_rows a where exists (select from public.admin_audit_logs x where x.id = a.id and a.tbl = 'admin_audit_logs')
              or exists (select from public.pii_access_audit x where x.id = a.id and a.tbl = 'pii_access_audit')
              or exists (select from public.function_call_audit x where x.id = a.id and a.tbl = 'function_call_audit')),
          3::bigint, 'every audit row is still there');

-- This transaction is a verify run: the calls and refusals it provokes are not production's
-- figures (the rollback-proof counters, sql/schema/60_verify.sql).
create temp table counters_before on commit drop as
  select c.relname, pg_sequence_last_value(c.oid) as last_value from pg_class c
   where c.relnamespace = 'smsao'::regnamespace and c.relkind = 'S' and c.relname like 'rpc\_%';
select smsao_test.act_as('alice');
select throws_ok(format('select public.approve_credit_request(%L)', gen_random_uuid()), '42501', null,
                 'a user who is not an admin cannot approve a credit request');
select smsao_test.act_as_owner();
select set_eq($$select c.relname, pg_sequence_last_value(c.oid) from pg_class c
                 where c.relnamespace = 'smsao'::regnamespace and c.relkind = 'S' and c.relname like 'rpc\_%'$$,
              'select * from counters_before',
              'the calls and refusals of a verify run leave the rollback-proof counters (smsao.rpc_*) as they were');
select is((select count(*) from smsao.verify_runs), 1::bigint, 'the mark is visible to the run''s own transaction only');

select * from finish();
rollback;
