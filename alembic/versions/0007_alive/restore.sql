-- Written by scripts/freeze_sql.py --restore for revision 0007_alive. Do not edit.

-- ==== sql/functions/cron_jobs.sql (as frozen by 0005_hardening) ====
-- The pg_cron jobs of CONTRACT section 4, defined once, here. `smsao-db schedule apply`
-- (runner/schedule.py) reads this and applies it by job name, with
-- cron.schedule_in_database, into whichever database of the cluster holds pg_cron.
-- The definitions live in the database because the commands call functions of this
-- schema version: a migration that changes a job's function changes its definition in
-- the same revision, and every tool (runner, verify, a DBA in psql) reads the same list.
-- Migrations never schedule anything, so they apply where pg_cron is absent.
--   runs_in: 'target' = the database this function lives in; 'cron' = pg_cron's own
--   database (cron.job_run_details lives there).
create or replace function smsao.cron_jobs()
  returns table (jobname text, schedule text, command text, runs_in text)
  language sql immutable
  set search_path = ''
as $$
  values
    ('smsao-health-check', '*/5 * * * *', 'select public.record_health_snapshot()', 'target'),
    ('smsao-performance-check', '* * * * *', 'select public.record_performance_sample()', 'target'),
    ('smsao-data-cleanup', '0 3 * * *', 'call smsao.run_daily_maintenance()', 'target'),
    ('smsao-cron-history-cleanup', '30 3 * * *',
     -- A run that never ended (server restarted mid-run) has no end_time: its start dates it.
     'delete from cron.job_run_details where coalesce(end_time, start_time) < now() - interval ''7 days''', 'cron')
$$;
revoke all on function smsao.cron_jobs() from public, anon, authenticated, service_role;


-- ==== sql/functions/monitoring.sql (as frozen by 0006_vitals) ====
-- Monitoring history, run by pg_cron (sql/functions/cron_jobs.sql) and callable by
-- service_role.

-- Store a health snapshot; on a change of status (the first snapshot counts as a change
-- from 'healthy') insert one system_alerts row and NOTIFY system_alerts with
--   {"alert_id", "severity", "status", "previous_status", "snapshot_id", "at"}.
-- Returns the health report plus "snapshot_id" and "alert" (the alert row, or null).
create or replace function public.record_health_snapshot() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  report jsonb;
  current_status text;
  previous_status text;
  snapshot_id bigint;
  alert jsonb;
  severity text;
  alert_id bigint;
  message text;
begin
  if smsao.caller_role() <> 'service_role' then
    raise exception 'record_health_snapshot: only service_role may call this' using errcode = '42501';
  end if;
  -- One recorder at a time: two concurrent runs would both compare against the same
  -- previous snapshot and raise the same alert twice.
  perform pg_catalog.pg_advisory_xact_lock(7411220, 1);
  perform smsao.compact_health_counters();

  report := smsao.health_report();
  current_status := report ->> 'system_status';
  select s.system_status into previous_status
  from public.system_health_snapshots s order by s.checked_at desc, s.id desc limit 1;
  previous_status := coalesce(previous_status, 'healthy');

  insert into public.system_health_snapshots (checked_at, system_status, report)
  values (pg_catalog.now(), current_status, report)
  returning id into snapshot_id;

  if current_status <> previous_status then
    severity := case current_status when 'healthy' then 'recovered' else current_status end;
    message := pg_catalog.format('system status changed from %s to %s', previous_status, current_status);
    if pg_catalog.jsonb_array_length(report -> 'recommendations') > 0 then
      message := message || pg_catalog.format(' (%s)', (
        select pg_catalog.string_agg(r, ', ') from pg_catalog.jsonb_array_elements_text(report -> 'recommendations') r));
    end if;
    insert into public.system_alerts (severity, message, report)
    values (severity, message, report)
    returning id into alert_id;
    alert := pg_catalog.jsonb_build_object('alert_id', alert_id, 'severity', severity,
      'status', current_status, 'previous_status', previous_status,
      'snapshot_id', snapshot_id, 'at', pg_catalog.now());
    perform pg_catalog.pg_notify('system_alerts', alert::text);
  end if;
  return report || pg_catalog.jsonb_build_object('snapshot_id', snapshot_id, 'alert', alert);
end
$$;
revoke all on function public.record_health_snapshot() from public, anon, authenticated, service_role;
grant execute on function public.record_health_snapshot() to service_role;

-- Store a performance sample: response time of the health check and of representative
-- app reads (the latest sender's profile, their newest SMS page and contacts page), and the
-- error rate of the critical operations since the previous sample: calls that ended in an
-- error other than a refusal, over all their calls (0 when there were none). The figures
-- come from the counters of smsao.critical_call_totals(), which count calls whose
-- transaction rolled back too; each sample keeps the totals it saw in details.counters.
-- Run every minute by pg_cron, it also prunes rate-limit state past its window.
create or replace function public.record_performance_sample() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz;
  health_ms numeric;
  app_ms numeric;
  sender uuid;
  totals jsonb;
  previous jsonb;
  calls bigint;
  errors bigint;
  refusals bigint;
  rate numeric;
  pruned integer;
  sample public.performance_samples;
begin
  if smsao.caller_role() <> 'service_role' then
    raise exception 'record_performance_sample: only service_role may call this' using errcode = '42501';
  end if;

  started := pg_catalog.clock_timestamp();
  perform smsao.health_report();
  health_ms := extract(epoch from pg_catalog.clock_timestamp() - started) * 1000;

  started := pg_catalog.clock_timestamp();
  select l.user_id into sender from public.sms_logs l order by l.id desc limit 1;
  perform from public.profiles p where p.user_id = sender;
  perform from public.sms_logs l where l.user_id = sender order by l.created_at desc limit 50;
  perform from public.contacts c where c.user_id = sender order by c.phone limit 50;
  app_ms := extract(epoch from pg_catalog.clock_timestamp() - started) * 1000;

  totals := smsao.critical_counters_now();
  previous := smsao.critical_counters_at('infinity');
  calls := smsao.counters_delta(totals, previous, 'calls');
  errors := smsao.counters_delta(totals, previous, 'errors');
  refusals := smsao.counters_delta(totals, previous, 'refusals');
  rate := case when calls > 0 then least(round(errors::numeric / calls, 6), 1) else 0 end;
  pruned := smsao.prune_rate_limit_state(10000);

  insert into public.performance_samples (sampled_at, response_time_ms, error_rate, details)
  values (pg_catalog.now(), round(health_ms + app_ms, 3), rate,
          pg_catalog.jsonb_build_object(
            'health_check_ms', round(health_ms, 3),
            'app_queries_ms', round(app_ms, 3),
            'calls_since_previous', calls,
            'errors_since_previous', errors,
            'refusals_since_previous', refusals,
            'rate_limit_keys_pruned', pruned,
            'counters', totals))
  returning * into sample;
  return pg_catalog.to_jsonb(sample);
end
$$;
revoke all on function public.record_performance_sample() from public, anon, authenticated, service_role;
grant execute on function public.record_performance_sample() to service_role;


-- ==== sql/functions/monitoring_access.sql (as frozen by 0005_hardening) ====
-- Monitoring and retention are for operators: service_role (the backend, pg_cron, a DBA)
-- and active admins. Everyone else gets 42501 naming the function.
create or replace function smsao.require_operator(function_name text) returns void
  language plpgsql stable
  set search_path = ''
as $$
begin
  if smsao.caller_role() = 'service_role' or smsao.is_admin() then
    return;
  end if;
  raise exception '%: only admins and service_role may call this', function_name
    using errcode = '42501';
end
$$;
revoke all on function smsao.require_operator(text) from public, anon, authenticated, service_role;


-- ==== sql/functions/production_system_health_check.sql (as frozen by 0006_vitals) ====
-- The health report (CONTRACT section 3):
--   {"timestamp", "system_status": "healthy"|"warning"|"critical",
--    "metrics": {"total_users", "active_sms_configs", "pending_credit_requests",
--                "failed_sms_24h", "orphaned_data", "sms_failure_rate"},
--    "recommendations": [code, ...],
--    "checks": {metric: "ok"|"warning"|"critical"}, "thresholds": {...},
--    "details": {"orphaned_data": {...}, "sms_window": {...}}}
--
-- Metrics, all live (same snapshot as the caller), none scanning a big table:
--   total_users              = count(*) from profiles                      [counter]
--   active_sms_configs       = count(*) from sms_configurations where is_active  [small table]
--   pending_credit_requests  = count(*) from credit_requests where status = 'pending'  [counter]
--   failed_sms_24h           = count(*) from sms_logs where status = 'failed'
--                              and created_at > now() - 24 hours
--                              [per-hour counters, plus the window's first, partial hour
--                               from the partial index sms_logs_failed_created_idx]
--   orphaned_data            = rows whose owner is gone in the two relations that no
--                              foreign key protects (see sql/schema/10_tables.sql):
--                              sms_logs whose user_id has no profile, plus otp_codes
--                              whose (non-null) user_id has no profile   [counters]
--                              A profile exists exactly while its auth.users row does.
--   sms_failure_rate         = failed / all sms_logs created since the start of the hour
--                              24 hours ago (details.sms_window)        [per-hour counters]
--
-- Vital signs of the engine and the scheduler (sql/functions/vitals.sql), also in metrics:
--   longest_transaction_s, connection_usage, xid_age_ratio, blocked_sessions,
--   database_size_bytes, health_snapshot_age_s, cron_failures_1h, security_refusals_1h
--   (NULL where not measurable; details.critical_operations has the last hour per operation).
--
-- Status: the worst level among the checks. Each threshold in smsao.health_thresholds
-- gives 'warning' from warning_at and 'critical' from critical_at (a NULL value is 'ok');
-- no active SMS configuration is always critical (nothing can be sent).
-- Recommendations: configure_sms_gateway (no active configuration), and the code of each
-- threshold row whose check is at warning or worse (smsao.health_thresholds.recommendation),
-- once each, in a fixed order.
create or replace function smsao.health_report() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  at timestamptz := pg_catalog.now();
  window_start timestamptz := smsao.hour_bucket(at - interval '24 hours');
  users bigint;
  pending bigint;
  orphan_sms bigint;
  orphan_otp bigint;
  window_total bigint;
  window_failed bigint;
  failed_later bigint;
  failed_edge bigint;
  configs bigint;
  failed_24h bigint;
  rate numeric;
  t record;
  val numeric;
  sample numeric;
  lvl text;
  checks jsonb := '{}'::jsonb;
  thresholds jsonb := '{}'::jsonb;
  codes text[] := '{}'::text[];
  recommendations text[];
  status text := 'healthy';
  grace interval;
  vitals jsonb;
  last_hour jsonb;
begin
  select coalesce(sum(c.value) filter (where c.metric = 'total_users' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'pending_credit_requests' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'orphaned_sms_logs' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'orphaned_otp_codes' and c.bucket = '-infinity'), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms' and c.bucket >= window_start), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms_failed' and c.bucket >= window_start), 0)::bigint,
         coalesce(sum(c.value) filter (where c.metric = 'sms_failed'
                                         and c.bucket >= window_start + interval '1 hour'), 0)::bigint
    into users, pending, orphan_sms, orphan_otp, window_total, window_failed, failed_later
    from smsao.health_counters c;

  select count(*) into failed_edge from public.sms_logs l
  where l.status = 'failed' and l.created_at > at - interval '24 hours'
    and l.created_at < window_start + interval '1 hour';
  failed_24h := failed_edge + failed_later;

  select count(*) into configs from public.sms_configurations s where s.is_active;
  rate := case when window_total > 0 then round(window_failed::numeric / window_total, 4) else 0 end;

  select pg_catalog.make_interval(secs => coalesce(h.grace_s, 30)) into grace
  from smsao.health_thresholds h where h.metric = 'blocked_sessions';
  select coalesce(pg_catalog.jsonb_object_agg(c.operation, pg_catalog.jsonb_build_object(
           'calls', c.calls, 'errors', c.errors, 'refusals', c.refusals)), '{}'::jsonb)
    into last_hour from smsao.critical_calls_since(at - interval '1 hour') c;
  vitals := smsao.engine_vitals(coalesce(grace, interval '30 seconds')) || smsao.scheduler_vitals()
            || pg_catalog.jsonb_build_object('security_refusals_1h',
                 (select coalesce(sum((o.value ->> 'refusals')::bigint), 0) from pg_catalog.jsonb_each(last_hour) o));

  for t in select * from smsao.health_thresholds h order by h.metric loop
    val := case t.metric
             when 'failed_sms_24h' then failed_24h
             when 'sms_failure_rate' then rate
             when 'pending_credit_requests' then pending
             when 'orphaned_data' then orphan_sms + orphan_otp
             else (vitals ->> t.metric)::numeric
           end;
    sample := case t.metric when 'sms_failure_rate' then window_total else val end;
    lvl := case when val is null or sample < t.min_sample then 'ok'
                when val >= t.critical_at then 'critical'
                when val >= t.warning_at then 'warning'
                else 'ok' end;
    checks := checks || pg_catalog.jsonb_build_object(t.metric, lvl);
    thresholds := thresholds || pg_catalog.jsonb_build_object(t.metric, pg_catalog.jsonb_build_object(
      'warning_at', t.warning_at, 'critical_at', t.critical_at, 'min_sample', t.min_sample, 'grace_s', t.grace_s));
    if lvl <> 'ok' and t.recommendation is not null then
      codes := codes || t.recommendation;
    end if;
  end loop;
  checks := checks || pg_catalog.jsonb_build_object(
    'active_sms_configs', case when configs = 0 then 'critical' else 'ok' end);
  if configs = 0 then
    codes := codes || 'configure_sms_gateway'::text;
  end if;
  -- Each code once, in the order of this list (codes not in it last, by name).
  recommendations := array(
    select c from (select distinct u as c from pg_catalog.unnest(codes) u) d
    order by pg_catalog.array_position(array['configure_sms_gateway', 'investigate_failed_sms',
               'review_pending_credit_requests', 'cleanup_orphaned_data', 'check_scheduler',
               'investigate_long_transactions', 'investigate_lock_waits', 'review_connection_pooling',
               'vacuum_freeze', 'investigate_refusals']::text[], c) nulls last, c);

  if exists (select from pg_catalog.jsonb_each_text(checks) e where e.value = 'critical') then
    status := 'critical';
  elsif exists (select from pg_catalog.jsonb_each_text(checks) e where e.value = 'warning') then
    status := 'warning';
  end if;

  return pg_catalog.jsonb_build_object(
    'timestamp', at,
    'system_status', status,
    'metrics', pg_catalog.jsonb_build_object(
      'total_users', users,
      'active_sms_configs', configs,
      'pending_credit_requests', pending,
      'failed_sms_24h', failed_24h,
      'orphaned_data', orphan_sms + orphan_otp,
      'sms_failure_rate', rate) || vitals,
    'recommendations', pg_catalog.to_jsonb(recommendations),
    'checks', checks,
    'thresholds', thresholds,
    'details', pg_catalog.jsonb_build_object(
      'orphaned_data', pg_catalog.jsonb_build_object('sms_logs', orphan_sms, 'otp_codes', orphan_otp),
      'sms_window', pg_catalog.jsonb_build_object(
        'since', window_start, 'total', window_total, 'failed', window_failed),
      'critical_operations', last_hour));
end
$$;
revoke all on function smsao.health_report() from public, anon, authenticated, service_role;

create or replace function public.production_system_health_check() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
begin
  perform smsao.require_operator('production_system_health_check');
  return smsao.health_report();
end
$$;
comment on function public.production_system_health_check() is
  'System health for admins and service_role. orphaned_data = sms_logs rows whose user_id has '
  'no profile + otp_codes rows whose non-null user_id has no profile (the relations without a '
  'foreign key). Thresholds: smsao.health_thresholds. See sql/functions/production_system_health_check.sql.';
revoke all on function public.production_system_health_check() from public, anon, authenticated, service_role;
grant execute on function public.production_system_health_check() to authenticated, service_role;


-- ==== sql/functions/vitals.sql (as frozen by 0006_vitals) ====
-- Vital signs of the engine and of the scheduler, and the critical operations' call
-- figures over time (revision 0006_vitals). production_system_health_check() reports them
-- next to the application's metrics; the dashboard and /metrics show them.
-- A value is NULL where it cannot be measured from here (no pg_cron, no statistics
-- privilege): its check is then 'ok'.

-- From PostgreSQL's statistics views. SECURITY DEFINER: pg_stat_activity shows other
-- roles' transactions only to superusers and pg_read_all_stats.
create or replace function smsao.engine_vitals(blocked_grace interval) returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  this_db oid := (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database());
  longest numeric;
  in_use bigint;
  blocked bigint;
  xid_ratio numeric;
begin
  -- Connections are the cluster's (max_connections is); transactions this database's.
  select count(*) into in_use from pg_catalog.pg_stat_activity a where a.backend_type = 'client backend';
  select round(extract(epoch from max(pg_catalog.clock_timestamp() - a.xact_start))::numeric, 3)
    into longest
    from pg_catalog.pg_stat_activity a
   where a.backend_type = 'client backend' and a.datid = this_db
     and a.pid <> pg_catalog.pg_backend_pid() and a.xact_start is not null;
  select count(distinct l.pid) into blocked
    from pg_catalog.pg_locks l
   where not l.granted and l.waitstart < pg_catalog.clock_timestamp() - blocked_grace
     and l.pid in (select a.pid from pg_catalog.pg_stat_activity a where a.datid = this_db);
  select round(max(pg_catalog.age(d.datfrozenxid))::numeric / 2147483648, 6) into xid_ratio
    from pg_catalog.pg_database d;
  return pg_catalog.jsonb_build_object(
    'longest_transaction_s', coalesce(longest, 0),
    'connection_usage', round(in_use::numeric / pg_catalog.current_setting('max_connections')::numeric, 4),
    'xid_age_ratio', xid_ratio,
    'blocked_sessions', blocked,
    'database_size_bytes', pg_catalog.pg_database_size(this_db));
end
$$;
revoke all on function smsao.engine_vitals(interval) from public, anon, authenticated, service_role;

-- The scheduler as a dead man's switch: once this database's jobs are scheduled, the age
-- of the newest health snapshot (they store one every 5 minutes) and the failed runs of
-- the last hour. Both NULL when pg_cron is not loaded or the jobs are not scheduled;
-- cron_failures_1h is also NULL where pg_cron keeps its run history in another database
-- (`smsao-db schedule status` reads it there).
create or replace function smsao.scheduler_vitals() returns jsonb
  language plpgsql stable security definer
  set search_path = ''
as $$
declare
  state smsao.scheduler_state;
  scheduled boolean;
  failures bigint;
  since timestamptz;
begin
  -- pg_cron works here when its tables are in this database, or else when its launcher runs
  -- (it does once the extension exists in pg_cron's database; a cron.* line in
  -- postgresql.conf alone loads nothing). Not pg_settings: building that view costs half a
  -- millisecond, a quarter of the health check.
  if pg_catalog.to_regclass('cron.job') is null
     and not exists (select from pg_catalog.pg_stat_activity a where a.backend_type = 'pg_cron launcher') then
    return pg_catalog.jsonb_build_object('health_snapshot_age_s', null, 'cron_failures_1h', null);
  end if;
  select * into state from smsao.scheduler_state;
  scheduled := coalesce(state.jobs_scheduled, false);
  if pg_catalog.to_regclass('cron.job') is not null then
    begin
      -- pg_cron lives in this database: its own tables say what is scheduled and how it ran.
      -- Dynamic: the statement names cron's tables, which other databases do not have.
      execute pg_catalog.format(
        $q$select exists (select from %1$I.job j where j.jobname = 'smsao-health-check'
                           and j.database = pg_catalog.current_database() and j.active),
                  (select count(*) from %1$I.job_run_details d join %1$I.job j on j.jobid = d.jobid
                    where j.jobname like 'smsao-%%' and d.status = 'failed'
                      and d.start_time > pg_catalog.now() - interval '1 hour')$q$, 'cron')
        into scheduled, failures;
    exception when insufficient_privilege then
      failures := null;
    end;
  end if;
  if not scheduled then
    return pg_catalog.jsonb_build_object('health_snapshot_age_s', null, 'cron_failures_1h', null);
  end if;
  -- Before the first snapshot, the jobs have been due since they were scheduled.
  select coalesce(max(s.checked_at), state.changed_at) into since from public.system_health_snapshots s;
  return pg_catalog.jsonb_build_object(
    'health_snapshot_age_s', round(extract(epoch from pg_catalog.now() - since)::numeric, 3),
    'cron_failures_1h', failures);
end
$$;
revoke all on function smsao.scheduler_vitals() from public, anon, authenticated, service_role;

-- Called by `smsao-db schedule apply` / `remove` (runner/schedule.py).
create or replace function smsao.record_schedule_state(jobs_scheduled boolean, cron_database text) returns void
  language sql
  set search_path = ''
as $$
  insert into smsao.scheduler_state (singleton, jobs_scheduled, cron_database, changed_at)
  values (true, jobs_scheduled, cron_database, pg_catalog.now())
  on conflict (singleton) do update
    set jobs_scheduled = excluded.jobs_scheduled, cron_database = excluded.cron_database,
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

