-- SMS AO contract tests (pgTAP), 07_health_vitals.sql: plain SQL, run alike by `smsao-db verify`,
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

-- Health and vital signs (CONTRACT section 3): production_system_health_check's shape,
-- roles and live values (each metric tells the truth, in the same transaction as the
-- change), the vital signs with their checks and thresholds, snapshots and alerts, and the
-- performance sample.
select plan(34);

create temp table reports (name text primary key, r jsonb) on commit drop;
grant all on reports to anon, authenticated, service_role;
select smsao_test.new_user('alice'), smsao_test.new_user('admin', admin => true);

-- Who may run it.
select smsao_test.act_as('admin');
select lives_ok('select public.production_system_health_check()', 'an admin runs the health check');
select smsao_test.act_as('alice');
select throws_ok('select public.production_system_health_check()', '42501', null,
                 'a user who is not an admin cannot run the health check');
select smsao_test.act_as_anon();
select throws_ok('select public.production_system_health_check()', '42501', null, 'anon cannot run the health check');

-- The shape.
select smsao_test.act_as_service();
insert into reports select 'before', public.production_system_health_check();
select ok((select r ?& array['timestamp', 'system_status', 'metrics', 'recommendations'] from reports where name = 'before'),
          'the report has timestamp, system_status, metrics and recommendations');
select ok((select r ->> 'system_status' in ('healthy', 'warning', 'critical') from reports where name = 'before'),
          'system_status is healthy, warning or critical');
select is_empty($$select m from reports, unnest(array['total_users', 'active_sms_configs', 'pending_credit_requests',
                                                      'failed_sms_24h', 'orphaned_data']) m
                   where name = 'before' and coalesce(jsonb_typeof(r -> 'metrics' -> m), '') <> 'number'
                      or (r -> 'metrics' ->> m)::numeric < 0$$,
                'every contract metric is a count (a non-negative number)');
select is((select jsonb_typeof(r -> 'recommendations') from reports where name = 'before'), 'array',
          'recommendations is an array of codes');

-- Each metric tells the truth: the recount agrees with the report.
select smsao_test.act_as_owner();
select results_eq($$select (r -> 'metrics' ->> 'total_users')::bigint, (r -> 'metrics' ->> 'pending_credit_requests')::bigint,
                           (r -> 'metrics' ->> 'active_sms_configs')::bigint from reports where name = 'before'$$,
                  $$select (select count(*) from public.profiles), (select count(*) from public.credit_requests where status = 'pending'),
                           (select count(*) from public.sms_configurations where is_active)$$,
                  'total_users, pending_credit_requests and active_sms_configs equal their recount');
select is((select (r -> 'metrics' ->> 'failed_sms_24h')::bigint from reports where name = 'before'),
          (select count(*) from public.sms_logs where status = 'failed' and created_at > now() - interval '24 hours'),
          'failed_sms_24h equals the failed SMS of the last 24 hours');

-- Live values: the seeded rows move the metrics at once, in this very transaction.
select smsao_test.new_user('bob');
insert into public.credit_requests (user_id, amount) values (smsao_test.uid('alice'), 5);
insert into public.sms_logs (user_id, recipient, status) values (smsao_test.uid('alice'), '+244900000001', 'failed');
insert into public.sms_logs (user_id, recipient) values (gen_random_uuid(), '+244900000001');
select smsao_test.act_as_service();
insert into reports select 'after', public.production_system_health_check();
select smsao_test.act_as_owner();
select results_eq($$select m, (a.r -> 'metrics' ->> m)::bigint - (b.r -> 'metrics' ->> m)::bigint
                     from reports a, reports b, unnest(array['total_users', 'active_sms_configs', 'pending_credit_requests',
                                                            'failed_sms_24h', 'orphaned_data']) with ordinality m
                    where a.name = 'after' and b.name = 'before' order by ordinality$$,
                  $$values ('total_users', 1::bigint), ('active_sms_configs', 0), ('pending_credit_requests', 1),
                           ('failed_sms_24h', 1), ('orphaned_data', 1)$$,
                  'the metrics count the rows written in the same transaction (1 user, 1 request, 1 failed SMS, 1 orphan)');

-- The vital signs: each with a value (null where not measurable), a check and thresholds.
select ok((select r -> 'metrics' ? v and r -> 'checks' ? v and r -> 'thresholds' ? v from reports where name = 'after'),
          'the vital sign ' || v || ' has a value, a check and thresholds')
  from unnest(array['longest_transaction_s', 'connection_usage', 'xid_age_ratio', 'blocked_sessions', 'database_size_bytes',
                    'health_snapshot_age_s', 'cron_failures_1h', 'security_refusals_1h']) v;
select is_empty($$select v from reports, unnest(array['longest_transaction_s', 'connection_usage', 'xid_age_ratio',
                     'blocked_sessions', 'database_size_bytes', 'health_snapshot_age_s', 'cron_failures_1h', 'security_refusals_1h']) v
                   where name = 'after' and jsonb_typeof(r -> 'metrics' -> v) not in ('number', 'null')
                      or (r -> 'metrics' ->> v)::numeric < 0$$,
                'every vital sign is a non-negative number or null');
select ok((select (r -> 'metrics' ->> 'connection_usage')::numeric > 0 and (r -> 'metrics' ->> 'connection_usage')::numeric <= 1
             from reports where name = 'after'), 'connection_usage is in (0, 1]');
select ok((select (r -> 'metrics' ->> 'database_size_bytes')::numeric = pg_database_size(current_database())
             from reports where name = 'after'), 'database_size_bytes is this database''s size');

-- Thresholds live in a table, changeable without a migration.
update smsao.health_thresholds set warning_at = 1 where metric = 'pending_credit_requests';
insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('verify', 'VERIFY', true);
select smsao_test.act_as_service();
insert into reports select 'threshold', public.production_system_health_check();
select smsao_test.act_as_owner();
select results_eq($$select r -> 'checks' ->> 'pending_credit_requests', r -> 'recommendations' ? 'review_pending_credit_requests'
                     from reports where name = 'threshold'$$,
                  $$values ('warning'::text, true)$$,
                  'a threshold changed in smsao.health_thresholds decides the check at once');

-- No active SMS configuration is always critical.
update public.sms_configurations set is_active = false where is_active;
select smsao_test.act_as_service();
insert into reports select 'no_gateway', public.production_system_health_check();
select smsao_test.act_as_owner();
select results_eq($$select (r -> 'metrics' ->> 'active_sms_configs')::integer, r ->> 'system_status',
                           r -> 'recommendations' ? 'configure_sms_gateway' from reports where name = 'no_gateway'$$,
                  $$values (0, 'critical'::text, true)$$,
                  'no active SMS configuration is critical, with configure_sms_gateway');
insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('verify', 'VERIFY', true);
select smsao_test.act_as_service();
insert into reports select 'gateway', public.production_system_health_check();
select smsao_test.act_as_owner();
select results_eq($$select (r -> 'metrics' ->> 'active_sms_configs')::integer, r -> 'recommendations' ? 'configure_sms_gateway'
                     from reports where name = 'gateway'$$,
                  $$values (1, false)$$, 'an active SMS configuration is counted, and configure_sms_gateway goes');

-- record_health_snapshot: stores a snapshot; an alert only on a change of status.
update public.sms_configurations set is_active = false where is_active;  -- forces critical
create temp table counts on commit drop as
  select (select count(*) from public.system_health_snapshots) as snapshots, (select count(*) from public.system_alerts) as alerts,
         (select system_status from public.system_health_snapshots order by checked_at desc, id desc limit 1) as previous;
select smsao_test.act_as_service();
select lives_ok('select public.record_health_snapshot()', 'service_role records a health snapshot');
select smsao_test.act_as_owner();
select is((select count(*) from public.system_health_snapshots) - (select snapshots from counts), 1::bigint,
          'record_health_snapshot stores one snapshot');
select is((select system_status from public.system_health_snapshots order by checked_at desc, id desc limit 1), 'critical',
          'the snapshot stores the status');
select results_eq($$select severity from public.system_alerts order by id desc limit (select count(*) from public.system_alerts) - (select alerts from counts)$$,
                  $$select 'critical'::text where (select previous from counts) is distinct from 'critical'$$,
                  'a change of status (to critical) inserts one critical alert; no change, no alert');
select smsao_test.act_as_service();
select ok(public.record_health_snapshot() is not null, 'service_role records a second snapshot');
select smsao_test.act_as_owner();
select is((select count(*) from public.system_alerts) - (select alerts from counts),
          case when (select previous from counts) is distinct from 'critical' then 1::bigint else 0 end,
          'a second snapshot with the same status inserts no alert');
select smsao_test.act_as('alice');
select throws_ok('select public.record_health_snapshot()', '42501', null, 'a user cannot record a health snapshot');

-- record_performance_sample: stores a sample with an error rate.
select smsao_test.act_as_service();
select lives_ok('select public.record_performance_sample()', 'service_role records a performance sample');
select smsao_test.act_as_owner();
select ok((select response_time_ms >= 0 and error_rate between 0 and 1 from public.performance_samples order by id desc limit 1),
          'the sample has a response time and an error rate in [0, 1]');
select smsao_test.act_as('alice');
select throws_ok('select public.record_performance_sample()', '42501', null, 'a user cannot record a performance sample');

select * from finish();
rollback;
