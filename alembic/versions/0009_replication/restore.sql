-- Written by scripts/freeze_sql.py --restore for revision 0009_replication. Do not edit.

-- ==== sql/functions/production_system_health_check.sql (as frozen by 0007_alive) ====
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
--   (NULL where not measurable, and details.unknown says why; details.critical_operations
--   has the last hour per operation, NULL when security_refusals_1h is).
--   and of recovery (sql/functions/recovery_vitals.sql): wal_archive_failing, backup_age_s,
--   restore_drill_age_s.
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
  engine jsonb;
  scheduler jsonb;
  vitals jsonb;
  last_hour jsonb;
  unknown jsonb := '{}'::jsonb;
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
  -- The last hour of the counters that survive rollback, from the per-minute sample taken
  -- at its start (at most 2 minutes earlier). Without such a sample (the scheduler not
  -- running an hour ago) the last hour cannot be told apart from what came before: NULL.
  if exists (select from public.performance_samples p
             where p.sampled_at <= at - interval '1 hour' and p.sampled_at >= at - interval '62 minutes'
               and p.details ? 'counters') then
    select coalesce(pg_catalog.jsonb_object_agg(c.operation, pg_catalog.jsonb_build_object(
             'calls', c.calls, 'errors', c.errors, 'refusals', c.refusals)), '{}'::jsonb)
      into last_hour from smsao.critical_calls_since(at - interval '1 hour') c;
  else
    unknown := unknown || pg_catalog.jsonb_build_object('security_refusals_1h',
      'no performance sample from an hour ago (they are taken every minute by smsao-performance-check)');
  end if;
  -- Each vitals function names the metrics it could not measure, and why, under 'unknown'.
  engine := smsao.engine_vitals(coalesce(grace, interval '30 seconds'));
  scheduler := smsao.scheduler_vitals();
  unknown := unknown || coalesce(engine -> 'unknown', '{}'::jsonb) || coalesce(scheduler -> 'unknown', '{}'::jsonb);
  vitals := (engine - 'unknown') || (scheduler - 'unknown') || smsao.recovery_vitals()
            || pg_catalog.jsonb_build_object('security_refusals_1h',
                 (select sum((o.value ->> 'refusals')::bigint) from pg_catalog.jsonb_each(last_hour) o));

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
               'vacuum_freeze', 'investigate_refusals', 'check_wal_archiving', 'take_backup',
               'run_restore_drill']::text[], c) nulls last, c);

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
      'critical_operations', last_hour,
      'unknown', unknown));
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

