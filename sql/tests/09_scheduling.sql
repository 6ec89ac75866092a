-- SMS AO contract tests (pgTAP), 09_scheduling.sql: plain SQL, run alike by `smsao-db verify`,
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

-- Scheduling (CONTRACT section 4): the pg_cron jobs as the package defines them, the
-- routines they call, and the daily housekeeping they run. Where pg_cron lives in this
-- database and the jobs are applied, the scheduled jobs match their definitions.
select plan(13);

select set_has($$select jobname, schedule from smsao.cron_jobs()$$,
               $$values ('smsao-health-check', '*/5 * * * *'), ('smsao-performance-check', '* * * * *'),
                        ('smsao-data-cleanup', '0 3 * * *'), ('smsao-cron-history-cleanup', '30 3 * * *')$$,
               'smsao.cron_jobs() defines the contract''s four jobs with their schedules');
select results_eq($$select command from smsao.cron_jobs() where jobname in ('smsao-health-check', 'smsao-performance-check') order by jobname$$,
                  array['select public.record_health_snapshot()', 'select public.record_performance_sample()'],
                  'the monitoring jobs run record_health_snapshot() and record_performance_sample()');
select has_function('public', 'record_health_snapshot', '{}'::name[], 'the health job''s function exists');
select has_function('public', 'record_performance_sample', '{}'::name[], 'the performance job''s function exists');
select ok(exists (select from pg_proc where oid = to_regprocedure('smsao.run_daily_maintenance()') and prokind = 'p'),
          'the daily job''s procedure smsao.run_daily_maintenance() exists');
select ok(not has_function_privilege(r, 'smsao.cron_jobs()', 'EXECUTE'), 'role ' || r || ' cannot read the job definitions')
  from unnest(array['anon', 'authenticated', 'service_role']) r;

-- Where pg_cron lives in this database and the jobs were applied: they are what the package defines.
select case
  when to_regclass('cron.job') is null then skip('pg_cron is not in this database (its jobs live in cron.database_name)', 1)
  else is_empty($$select c.jobname from cron.job c join smsao.cron_jobs() j on j.jobname = c.jobname
                   where c.database = current_database() and j.runs_in = 'target'
                     and (c.schedule, c.command) is distinct from (j.schedule, j.command)$$,
                'every smsao-* job scheduled for this database runs what smsao.cron_jobs() defines, on its schedule')
end;

-- The daily housekeeping: monitoring history older than 30 days and rate-limit state past its window.
create temp table kept (what text primary key, id bigint) on commit drop;
with old_snapshot as (insert into public.system_health_snapshots (system_status, checked_at)
                      values ('healthy', now() - interval '31 days') returning id),
     new_snapshot as (insert into public.system_health_snapshots (system_status, checked_at)
                      values ('healthy', now() - interval '29 days') returning id),
     old_sample as (insert into public.performance_samples (response_time_ms, sampled_at)
                    values (1, now() - interval '31 days') returning id),
     new_sample as (insert into public.performance_samples (response_time_ms, sampled_at)
                    values (1, now() - interval '29 days') returning id)
insert into kept select 'old snapshot', id from old_snapshot union all select 'new snapshot', id from new_snapshot
           union all select 'old sample', id from old_sample union all select 'new sample', id from new_sample;
-- Two keys of a large limit (200), each with its first 100 attempts in one chunk.
insert into smsao.rate_limit_keys (caller_key, operation_type, admitted, ring_size, retain_window, window_ends) values
  ('verify:expired', 'verify_probe', 100, 200, interval '1 minute', clock_timestamp() - interval '1 second'),
  ('verify:live', 'verify_probe', 100, 200, interval '1 minute', clock_timestamp() + interval '1 minute');
insert into smsao.rate_limit_hits (caller_key, operation_type, slot, chunk, stamps) values
  ('verify:expired', 'verify_probe', 0, 0, array_fill(clock_timestamp() - interval '61 seconds', array[100])),
  ('verify:live', 'verify_probe', 0, 0, array_fill(clock_timestamp(), array[100]));
select lives_ok('select smsao.prune_housekeeping()', 'the daily housekeeping runs');
select results_eq($$select k.what, case when k.what like '%snapshot'
                                        then exists (select from public.system_health_snapshots s where s.id = k.id)
                                        else exists (select from public.performance_samples p where p.id = k.id) end
                     from kept k order by k.what$$,
                  $$values ('new sample', true), ('new snapshot', true), ('old sample', false), ('old snapshot', false)$$,
                  'housekeeping prunes snapshots and samples older than 30 days, and keeps younger ones');
select results_eq($$select caller_key, (select count(*) from smsao.rate_limit_hits h where h.caller_key = k.caller_key)
                     from smsao.rate_limit_keys k where caller_key like 'verify:%' order by 1$$,
                  $$values ('verify:live'::text, 1::bigint)$$,
                  'housekeeping prunes rate-limit state past its window (key and attempts), and keeps live state');
select smsao_test.act_as_service();
select throws_ok('select smsao.prune_housekeeping()', '42501', null, 'service_role cannot run the housekeeping (the owner''s job)');

select * from finish();
rollback;
