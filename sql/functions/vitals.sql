-- Vital signs of the engine and of the scheduler, and the critical operations' call
-- figures over time (revision 0006_vitals). production_system_health_check() reports them
-- next to the application's metrics; the dashboard and /metrics show them.
-- A value is NULL where it cannot be measured from here (no pg_cron, no statistics
-- privilege): its check is then 'ok'.

-- From PostgreSQL's statistics views. SECURITY DEFINER, so the figures do not depend on who
-- asks: pg_stat_activity shows another role's sessions (their state, backend type and
-- transaction start) only to superusers and members of pg_read_all_stats, and runs here
-- as this function's owner. An owner without that privilege (a managed service's admin
-- role that is not superuser) sees its own sessions only: the longest transaction and the
-- connections in use cannot be told then, so both are NULL (never a reassuring 0) and
-- 'unknown' says why. pg_locks, pg_database and the database size are readable by all.
create or replace function smsao.engine_vitals(blocked_grace interval) returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  this_db oid := (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database());
  -- True for a superuser too.
  sees_all boolean := pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE');
  longest numeric;
  in_use bigint;
  blocked bigint;
  xid_ratio numeric;
  why text;
  unknown jsonb := '{}'::jsonb;
begin
  if sees_all then
    -- Connections are the cluster's (max_connections is); transactions this database's.
    select count(*) into in_use from pg_catalog.pg_stat_activity a where a.backend_type = 'client backend';
    select coalesce(round(extract(epoch from max(pg_catalog.clock_timestamp() - a.xact_start))::numeric, 3), 0)
      into longest
      from pg_catalog.pg_stat_activity a
     where a.backend_type = 'client backend' and a.datid = this_db
       and a.pid <> pg_catalog.pg_backend_pid() and a.xact_start is not null;
  else
    why := pg_catalog.format('role %I, which runs the health check, cannot see other sessions: '
                             'grant it pg_read_all_stats (or pg_monitor)', current_user);
    unknown := pg_catalog.jsonb_build_object('longest_transaction_s', why, 'connection_usage', why);
  end if;
  select count(distinct l.pid) into blocked
    from pg_catalog.pg_locks l
   where not l.granted and l.waitstart < pg_catalog.clock_timestamp() - blocked_grace
     and l.pid in (select a.pid from pg_catalog.pg_stat_activity a where a.datid = this_db);
  select round(max(pg_catalog.age(d.datfrozenxid))::numeric / 2147483648, 6) into xid_ratio
    from pg_catalog.pg_database d;
  return pg_catalog.jsonb_build_object(
    'longest_transaction_s', longest,
    'connection_usage', round(in_use::numeric / pg_catalog.current_setting('max_connections')::numeric, 4),
    'xid_age_ratio', xid_ratio,
    'blocked_sessions', blocked,
    'database_size_bytes', pg_catalog.pg_database_size(this_db),
    'unknown', unknown);
end
$$;
revoke all on function smsao.engine_vitals(interval) from public, anon, authenticated, service_role;

-- The scheduler as a dead man's switch: once this database's jobs are scheduled, the age
-- of the newest health snapshot (they store one every 5 minutes) and the failed runs of
-- the last hour. NULL when it cannot be told, with the reason under 'unknown':
--   * pg_cron is not loaded, or the jobs are not scheduled: both NULL;
--   * pg_cron keeps its run history in another database (`smsao-db schedule status` reads
--     it there), or the jobs belong to a login this function's owner cannot see (cron.job
--     shows a job only to its owner, unless superuser): cron_failures_1h NULL.
-- The age counts from the newest snapshot, or from when the jobs were scheduled or the
-- server started if later: a server that was down, or jobs just applied again, are not a
-- scheduler that stopped.
-- A run that never connected (a job pointed at a stale host or port) has neither a start
-- nor an end time. It counts when it came after the newest run known to be older than an
-- hour (run ids grow with time): a job that has failed since long ago keeps counting.
create or replace function smsao.scheduler_vitals() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  state smsao.scheduler_state;
  scheduled boolean;
  visible boolean := false;
  failures bigint;
  why_failures text;
  since timestamptz;
begin
  -- pg_cron works here when its tables are in this database, or else when its launcher runs
  -- (it does once the extension exists in pg_cron's database; a cron.* line in
  -- postgresql.conf alone loads nothing). Not pg_settings: building that view costs half a
  -- millisecond, a quarter of the health check.
  if pg_catalog.to_regclass('cron.job') is null
     and not exists (select from pg_catalog.pg_stat_activity a where a.backend_type = 'pg_cron launcher') then
    return smsao.scheduler_unknown('pg_cron is not loaded on this server');
  end if;
  select * into state from smsao.scheduler_state;
  scheduled := coalesce(state.jobs_scheduled, false);
  if pg_catalog.to_regclass('cron.job') is null then
    why_failures := pg_catalog.format('pg_cron keeps its run history in database %L (smsao-db schedule status)',
                                      state.cron_database);
  else
    begin
      -- pg_cron lives in this database: its own tables say what is scheduled and how it ran.
      -- Dynamic: the statement names cron's tables, which other databases do not have.
      execute pg_catalog.format(
        $q$select exists (select from %1$I.job j where j.jobname = 'smsao-health-check'
                           and j.database = pg_catalog.current_database() and j.active),
                  (select count(*) from %1$I.job_run_details d join %1$I.job j on j.jobid = d.jobid
                    where j.jobname like 'smsao-%%' and j.database = pg_catalog.current_database()
                      and d.status = 'failed'
                      and (coalesce(d.end_time, d.start_time) > pg_catalog.now() - interval '1 hour'
                           or (d.start_time is null and d.end_time is null
                               and d.runid > coalesce((select max(o.runid) from %1$I.job_run_details o
                                                        where coalesce(o.end_time, o.start_time)
                                                              <= pg_catalog.now() - interval '1 hour'), 0))))$q$,
        'cron')
        into visible, failures;
    exception when insufficient_privilege then
      visible := false;
    end;
    if not visible and scheduled
       and not (select r.rolsuper from pg_catalog.pg_roles r where r.rolname = current_user) then
      -- `schedule apply` said they are scheduled, yet cron.job does not show them to us.
      failures := null;
      why_failures := pg_catalog.format('the jobs belong to login %L, and cron.job shows a job only to its '
                                        'owner: run the health check as that login, or a superuser', state.scheduled_by);
    end if;
    scheduled := scheduled or visible;
  end if;
  if not scheduled then
    return smsao.scheduler_unknown('the jobs are not scheduled (smsao-db schedule apply)');
  end if;
  select greatest(max(s.checked_at), state.changed_at, smsao.server_started_at())
    into since from public.system_health_snapshots s;
  return pg_catalog.jsonb_build_object(
    'health_snapshot_age_s', round(extract(epoch from pg_catalog.now() - since)::numeric, 3),
    'cron_failures_1h', failures,
    'unknown', case when why_failures is null then '{}'::jsonb
                    else pg_catalog.jsonb_build_object('cron_failures_1h', why_failures) end);
end
$$;
revoke all on function smsao.scheduler_vitals() from public, anon, authenticated, service_role;

-- When this server last started: its downtime is not the scheduler failing. A function of
-- its own so that a test can play a server that started long ago.
create or replace function smsao.server_started_at() returns timestamptz
  language plpgsql stable
  set search_path = ''
as $$
begin
  return pg_catalog.pg_postmaster_start_time();
end
$$;
revoke all on function smsao.server_started_at() from public, anon, authenticated, service_role;

create or replace function smsao.scheduler_unknown(why text) returns jsonb
  language plpgsql immutable
  set search_path = ''
as $$
begin
  return pg_catalog.jsonb_build_object('health_snapshot_age_s', null, 'cron_failures_1h', null,
    'unknown', pg_catalog.jsonb_build_object('health_snapshot_age_s', why, 'cron_failures_1h', why));
end
$$;
revoke all on function smsao.scheduler_unknown(text) from public, anon, authenticated, service_role;

-- Called by `smsao-db schedule apply` / `remove` (runner/schedule.py), as the login that
-- owns the jobs (pg_cron names each job's owner).
create or replace function smsao.record_schedule_state(jobs_scheduled boolean, cron_database text) returns void
  language sql
  set search_path = ''
as $$
  insert into smsao.scheduler_state (singleton, jobs_scheduled, cron_database, changed_at, scheduled_by)
  values (true, jobs_scheduled, cron_database, pg_catalog.now(), current_user)
  on conflict (singleton) do update
    set jobs_scheduled = excluded.jobs_scheduled, cron_database = excluded.cron_database,
        scheduled_by = excluded.scheduled_by,
        changed_at = case when smsao.scheduler_state.jobs_scheduled = excluded.jobs_scheduled
                          then smsao.scheduler_state.changed_at else excluded.changed_at end
$$;
revoke all on function smsao.record_schedule_state(boolean, text) from public, anon, authenticated, service_role;

-- The helpers below are PL/pgSQL, not SQL: on PostgreSQL 15 an SQL function that pins
-- search_path cannot be inlined and is planned again on every call (a third of a
-- millisecond each), where PL/pgSQL keeps its plans for the session.

-- Sum over the operations of `field` in a counters object ({op: {calls, errors, refusals}}),
-- newer minus older, each operation at least 0 (a counter never goes back).
create or replace function smsao.counters_delta(newer jsonb, older jsonb, field text) returns bigint
  language plpgsql immutable
  set search_path = ''
as $$
begin
  return (select coalesce(sum(greatest((n.value ->> field)::bigint
                                       - coalesce((older #>> array[n.key, field])::bigint, 0), 0)), 0)::bigint
          from pg_catalog.jsonb_each(newer) n);
end
$$;
revoke all on function smsao.counters_delta(jsonb, jsonb, text) from public, anon, authenticated, service_role;

-- The counters now, in the shape performance samples store them (details.counters).
create or replace function smsao.critical_counters_now() returns jsonb
  language plpgsql stable
  set search_path = ''
as $$
begin
  return (select coalesce(pg_catalog.jsonb_object_agg(t.operation, pg_catalog.jsonb_build_object(
                   'calls', t.calls, 'errors', t.errors, 'refusals', t.refusals)), '{}'::jsonb)
          from smsao.critical_call_totals() t);
end
$$;
revoke all on function smsao.critical_counters_now() from public, anon, authenticated, service_role;

-- The counters as the newest performance sample at or before `at` stored them; NULL when
-- no sample is that old.
create or replace function smsao.critical_counters_at(at timestamptz) returns jsonb
  language plpgsql stable
  set search_path = ''
as $$
begin
  return (select p.details -> 'counters' from public.performance_samples p
          where p.sampled_at <= critical_counters_at.at and p.details ? 'counters'
          order by p.sampled_at desc limit 1);
end
$$;
revoke all on function smsao.critical_counters_at(timestamptz) from public, anon, authenticated, service_role;

-- Calls, errors and refusals of each critical operation since `since`, rolled-back calls
-- included: the counters now minus those of the newest sample at or before `since`. With
-- no sample that old (pg_cron not running yet), everything counted so far.
create or replace function smsao.critical_calls_since(since timestamptz)
  returns table (operation text, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable
  set search_path = ''
as $$
declare
  base jsonb := coalesce(smsao.critical_counters_at(since), '{}'::jsonb);
begin
  return query
  select t.operation,
         greatest(t.calls - coalesce((base #>> array[t.operation, 'calls'])::bigint, 0), 0),
         greatest(t.errors - coalesce((base #>> array[t.operation, 'errors'])::bigint, 0), 0),
         greatest(t.refusals - coalesce((base #>> array[t.operation, 'refusals'])::bigint, 0), 0)
  from smsao.critical_call_totals() t
  order by t.operation;
end
$$;
revoke all on function smsao.critical_calls_since(timestamptz) from public, anon, authenticated, service_role;

-- Per hour (UTC) for the last `hours` hours, the critical operations' calls, errors and
-- refusals, from the counters stored by the performance samples around each hour's edges
-- (the current hour ends now). NULL for an hour that began before any sample.
create or replace function smsao.critical_calls_per_hour(hours integer default 24)
  returns table (hour timestamptz, calls bigint, errors bigint, refusals bigint)
  language plpgsql stable
  set search_path = ''
as $$
begin
  return query
  with edges as (
    select h.at as hour,
           smsao.critical_counters_at(h.at) as at_start,
           case when h.at + interval '1 hour' > pg_catalog.now() then smsao.critical_counters_now()
                else smsao.critical_counters_at(h.at + interval '1 hour') end as at_end
    from pg_catalog.generate_series(pg_catalog.date_trunc('hour', pg_catalog.now())
                                      - pg_catalog.make_interval(hours => greatest(critical_calls_per_hour.hours, 1) - 1),
                                    pg_catalog.date_trunc('hour', pg_catalog.now()), interval '1 hour') h(at)
  )
  select e.hour,
         case when e.at_start is not null then smsao.counters_delta(e.at_end, e.at_start, 'calls') end,
         case when e.at_start is not null then smsao.counters_delta(e.at_end, e.at_start, 'errors') end,
         case when e.at_start is not null then smsao.counters_delta(e.at_end, e.at_start, 'refusals') end
  from edges e
  order by e.hour;
end
$$;
revoke all on function smsao.critical_calls_per_hour(integer) from public, anon, authenticated, service_role;
