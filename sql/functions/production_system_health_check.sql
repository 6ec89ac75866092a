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
-- Status: the worst level among the checks. Each threshold in smsao.health_thresholds
-- gives 'warning' from warning_at and 'critical' from critical_at; no active SMS
-- configuration is always critical (nothing can be sent).
-- Recommendations: configure_sms_gateway (no active configuration),
-- investigate_failed_sms (failed_sms_24h or sms_failure_rate at warning or worse),
-- review_pending_credit_requests, cleanup_orphaned_data (their metric at warning or worse).
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
  recommendations text[] := '{}'::text[];
  status text := 'healthy';
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

  for t in select * from smsao.health_thresholds h order by h.metric loop
    val := case t.metric
             when 'failed_sms_24h' then failed_24h
             when 'sms_failure_rate' then rate
             when 'pending_credit_requests' then pending
             when 'orphaned_data' then orphan_sms + orphan_otp
           end;
    sample := case t.metric when 'sms_failure_rate' then window_total else val end;
    lvl := case when sample < t.min_sample then 'ok'
                when val >= t.critical_at then 'critical'
                when val >= t.warning_at then 'warning'
                else 'ok' end;
    checks := checks || pg_catalog.jsonb_build_object(t.metric, lvl);
    thresholds := thresholds || pg_catalog.jsonb_build_object(t.metric, pg_catalog.jsonb_build_object(
      'warning_at', t.warning_at, 'critical_at', t.critical_at, 'min_sample', t.min_sample));
  end loop;
  checks := checks || pg_catalog.jsonb_build_object(
    'active_sms_configs', case when configs = 0 then 'critical' else 'ok' end);

  if checks @> '{"active_sms_configs": "critical"}' then
    recommendations := recommendations || 'configure_sms_gateway'::text;
  end if;
  if coalesce(checks ->> 'failed_sms_24h', 'ok') <> 'ok' or coalesce(checks ->> 'sms_failure_rate', 'ok') <> 'ok' then
    recommendations := recommendations || 'investigate_failed_sms'::text;
  end if;
  if coalesce(checks ->> 'pending_credit_requests', 'ok') <> 'ok' then
    recommendations := recommendations || 'review_pending_credit_requests'::text;
  end if;
  if coalesce(checks ->> 'orphaned_data', 'ok') <> 'ok' then
    recommendations := recommendations || 'cleanup_orphaned_data'::text;
  end if;

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
      'sms_failure_rate', rate),
    'recommendations', pg_catalog.to_jsonb(recommendations),
    'checks', checks,
    'thresholds', thresholds,
    'details', pg_catalog.jsonb_build_object(
      'orphaned_data', pg_catalog.jsonb_build_object('sms_logs', orphan_sms, 'otp_codes', orphan_otp),
      'sms_window', pg_catalog.jsonb_build_object(
        'since', window_start, 'total', window_total, 'failed', window_failed)));
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
