-- 24 hours of monitoring history for `smsao-db up --demo`, so that every chart and the
-- alert list of the dashboard have content on a first look: a health snapshot every
-- 5 minutes, a performance sample every minute, and one incident: the SMS gateway went
-- missing 10 hours ago (critical) and was back 40 minutes later (recovered), with a slow
-- and error-prone spell in the samples meanwhile. The reports are today's real health report
-- (its shape, metrics and thresholds) with the status of the time. Rows carry "demo": true,
-- and nothing is added when they are already there: running this twice changes nothing.
-- Run as the database owner (a superuser): pg_cron's service identity.
do $$
declare
  base jsonb := public.production_system_health_check();
  normal text := base ->> 'system_status';
  incident_start constant int := 600;  -- minutes ago
  incident_end constant int := 560;
begin
  if exists (select from public.system_health_snapshots where report ->> 'demo' = 'true') then
    return;
  end if;
  if normal = 'critical' then
    normal := 'healthy';  -- the demo's gateway is active: the outage is the incident below
    base := base || '{"recommendations": []}' || jsonb_build_object('checks', (base -> 'checks') - 'active_sms_configs');
  end if;

  insert into public.system_health_snapshots (checked_at, system_status, report)
  select at, status, base || jsonb_build_object(
           'demo', true, 'timestamp', at, 'system_status', status,
           'metrics', (base -> 'metrics') || case when outage then '{"active_sms_configs": 0}'::jsonb else '{}' end,
           'checks', coalesce(base -> 'checks', '{}') || case when outage then '{"active_sms_configs": "critical"}'::jsonb else '{}' end,
           'recommendations', case when outage then '["configure_sms_gateway"]'::jsonb else base -> 'recommendations' end)
  from generate_series(1440, 5, -5) m,
       lateral (select now() - make_interval(mins => m) as at, m <= incident_start and m > incident_end as outage) t,
       lateral (select case when outage then 'critical' else normal end as status) s;

  insert into public.performance_samples (sampled_at, response_time_ms, error_rate, details)
  select now() - make_interval(mins => m),
         round((3 + 1.5 * sin(m / 45.0) + random() + case when outage then 18 + 6 * random() else 0 end)::numeric, 3),
         case when outage then round((0.02 + 0.05 * random())::numeric, 6) else 0 end,
         -- The counters as they stand now: the day's samples are the baselines of the last
         -- hour's refusals (none during the demo day itself).
         jsonb_build_object('demo', true, 'counters', smsao.critical_counters_now())
  from generate_series(1440, 1, -1) m,
       lateral (select m <= incident_start and m > incident_end as outage) t;

  insert into public.system_alerts (created_at, severity, message, report)
  values (now() - make_interval(mins => incident_start), 'critical',
          format('system status changed from %s to critical (configure_sms_gateway)', normal),
          '{"demo": true}'),
         (now() - make_interval(mins => incident_end), case normal when 'healthy' then 'recovered' else normal end,
          format('system status changed from critical to %s', normal), '{"demo": true}');
end
$$;
