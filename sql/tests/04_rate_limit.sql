-- SMS AO contract tests (pgTAP), 04_rate_limit.sql: plain SQL, run alike by `smsao-db verify`,
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

-- Rate limiting (CONTRACT section 3): enhanced_security_rate_limit admits exactly
-- max_attempts per window and key (caller, operation), refuses and audits the rest, and
-- every critical operation is limited by its operation_type (PT429 when refused).
select plan(29);

-- Calls the limiter `tries` times as the current caller; the answers in order.
create function smsao_test.attempts(operation text, max_attempts integer, window_minutes integer, tries integer)
  returns boolean[] language plpgsql as $$
declare
  answers boolean[] := '{}';
begin
  for i in 1..tries loop
    answers := answers || public.enhanced_security_rate_limit(operation, max_attempts, window_minutes);
  end loop;
  return answers;
end $$;

-- Runs `statement` `tries` times, each in a subtransaction; the SQLSTATE of each ('ok' when it passed).
create function smsao_test.outcomes(statement text, tries integer) returns text[] language plpgsql as $$
declare
  states text[] := '{}';
begin
  for i in 1..tries loop
    begin
      execute statement;
      states := states || 'ok'::text;
    exception when others then
      states := states || sqlstate::text;
    end;
  end loop;
  return states;
end $$;

-- The contract's limit of an operation, unless an operator changed it in smsao.operation_limits.
create function smsao_test.limit_of(operation text, contract_default integer) returns integer
  language sql stable security definer as $$
  select coalesce((select l.max_attempts from smsao.operation_limits l where l.operation_type = operation),
                  contract_default)
$$;
grant execute on all functions in schema smsao_test to anon, authenticated, service_role;

select smsao_test.new_user('alice'), smsao_test.new_user('bob'), smsao_test.new_user('admin', admin => true);
select smsao_test.new_user('target');

select smsao_test.act_as('alice');
select is(smsao_test.attempts('verify_probe', 3, 1, 5), array[true, true, true, false, false],
          'enhanced_security_rate_limit admits exactly max_attempts (3 of 5 calls), then refuses');
select is(smsao_test.attempts('verify_probe', 3, 1, 1), array[false], 'a refused key stays refused within its window');
select is(smsao_test.attempts('verify_probe_other', 3, 1, 1), array[true],
          'the key is (caller, operation): another operation_type starts afresh');
select is(smsao_test.attempts('verify_probe', 5, 1, 3), array[true, true, false],
          'a larger max_attempts on the same key counts the attempts already admitted');
select is(smsao_test.attempts('verify_probe_large', 150, 1, 151), array_fill(true, array[150]) || false,
          'a large limit (150) admits exactly 150, across the move of its newest 100 attempts to the hits table');
select smsao_test.act_as('bob');
select is(smsao_test.attempts('verify_probe', 3, 1, 1), array[true], 'another user starts afresh');
select smsao_test.act_as_owner();
select is((select count(*) from public.function_call_audit
            where caller_id = smsao_test.uid('alice') and outcome = 'rate_limited'
              and arguments ->> 'operation_type' = 'verify_probe'), 1::bigint,
          'a refusal is recorded in function_call_audit as rate_limited, once per window');

-- anon callers are keyed by the first x-forwarded-for address, and bounded.
select smsao_test.act_as_anon('198.51.100.7, 10.0.0.1');
select is(smsao_test.attempts('verify_probe', 2, 1, 3), array[true, true, false],
          'anon: admits exactly max_attempts (2 of 3 calls) per address');
select smsao_test.act_as_anon('198.51.100.8');
select is(smsao_test.attempts('verify_probe', 2, 1, 1), array[true], 'anon: another address starts afresh');
select throws_ok($$select public.enhanced_security_rate_limit('verify_probe', 101, 1)$$, '22023', null,
                 'anon: max_attempts above 100 raises 22023');

-- Bad arguments raise 22023 naming the argument.
select smsao_test.act_as('alice');
select throws_ok($$select public.enhanced_security_rate_limit(null, 5, 15)$$, '22023', null,
                 'operation_type NULL raises 22023');
select throws_ok($$select public.enhanced_security_rate_limit('Not An Identifier', 5, 15)$$, '22023', null,
                 'an operation_type that is not an identifier raises 22023');
select throws_ok($$select public.enhanced_security_rate_limit('verify_probe', 0, 15)$$, '22023', null,
                 'max_attempts 0 raises 22023');
select throws_ok($$select public.enhanced_security_rate_limit('verify_probe', null, 15)$$, '22023', null,
                 'max_attempts NULL raises 22023');
select throws_ok($$select public.enhanced_security_rate_limit('verify_probe', 5, -1)$$, '22023', null,
                 'window_minutes -1 raises 22023');
select throws_ok($$select public.enhanced_security_rate_limit('verify_probe', 5, null)$$, '22023', null,
                 'window_minutes NULL raises 22023');
select throws_like($$select public.enhanced_security_rate_limit('verify_probe', 0, 15)$$, '%max_attempts%',
                   'the 22023 message names the argument');

-- The critical operations, each limited by its operation_type (PT429 when refused).
select smsao_test.act_as('bob');
select is(smsao_test.outcomes('select public.request_credits(1)', smsao_test.limit_of('financial_transaction', 5) + 1),
          array_fill('ok'::text, array[smsao_test.limit_of('financial_transaction', 5)]) || 'PT429'::text,
          'request_credits: financial_transaction admits its limit, then raises PT429');
select is(smsao_test.outcomes(format($$update public.profiles set full_name = 'x' where user_id = %L$$, smsao_test.uid('bob')),
                              smsao_test.limit_of('profile_update', 10) + 1),
          array_fill('ok'::text, array[smsao_test.limit_of('profile_update', 10)]) || 'PT429'::text,
          'profile updates: profile_update admits its limit per statement, then raises PT429');
select is(smsao_test.outcomes(format($$insert into public.contacts (user_id, phone) select %L, '+2449' || lpad((count(*) + 1)::text, 8, '0') from public.contacts$$, smsao_test.uid('bob')),
                              smsao_test.limit_of('contact_operation', 60) + 1),
          array_fill('ok'::text, array[smsao_test.limit_of('contact_operation', 60)]) || 'PT429'::text,
          'contact writes: contact_operation admits its limit per statement, then raises PT429');
select smsao_test.act_as_owner();
select is((select count(*) from public.contacts where user_id = smsao_test.uid('bob')),
          smsao_test.limit_of('contact_operation', 60)::bigint,
          'a refused contact write wrote nothing');
select smsao_test.act_as('bob');
select is(smsao_test.outcomes(format($$insert into public.contacts (user_id, phone) select %L, '+2449' || lpad((1000 + g)::text, 8, '0') from generate_series(1, 3) g$$, smsao_test.uid('bob')), 1),
          array['PT429'], 'a multi-row contact statement is one attempt, refused as a whole once the limit is reached');
select smsao_test.act_as('admin');
select is(smsao_test.outcomes(format('select public.admin_get_user_details(%L)', smsao_test.uid('target')),
                              smsao_test.limit_of('admin_access', 60) + 1),
          array_fill('ok'::text, array[smsao_test.limit_of('admin_access', 60)]) || 'PT429'::text,
          'admin operations: admin_access admits its limit, then raises PT429');
select throws_ok(format('select public.admin_set_user_status(%L, %L)', smsao_test.uid('target'), 'suspended'), 'PT429', null,
                 'admin_access is shared by every admin operation');
select smsao_test.act_as_service();
select is(smsao_test.outcomes(format('select public.admin_get_user_details(%L)', smsao_test.uid('target')),
                              smsao_test.limit_of('admin_access', 60) + 1),
          array_fill('ok'::text, array[smsao_test.limit_of('admin_access', 60) + 1]),
          'service_role (the trusted backend) is not throttled by the critical operations'' limits');

-- The limiter's state is the owner's: no app role reads or writes it.
select smsao_test.act_as('alice');
select throws_ok('select count(*) from smsao.rate_limit_keys', '42501', null, 'a user cannot read the rate-limit state');
select throws_ok('delete from smsao.rate_limit_hits', '42501', null, 'a user cannot reset the rate-limit state');
select smsao_test.act_as_anon();
select throws_ok('delete from smsao.rate_limit_keys', '42501', null, 'anon cannot reset the rate-limit state');
select smsao_test.act_as_owner();
select isnt((select count(*) from smsao.rate_limit_keys where caller_key = 'user:' || smsao_test.uid('alice')), 0::bigint,
            'admissions are kept per (caller, operation) key');

select * from finish();
rollback;
