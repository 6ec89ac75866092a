-- Removes what 0006_vitals added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the health check and sampler of 0005.
drop function if exists smsao.critical_calls_per_hour(integer);
drop function if exists smsao.critical_calls_since(timestamptz);
drop function if exists smsao.critical_counters_at(timestamptz);
drop function if exists smsao.critical_counters_now();
drop function if exists smsao.counters_delta(jsonb, jsonb, text);
drop function if exists smsao.record_schedule_state(boolean, text);
drop function if exists smsao.scheduler_vitals();
drop function if exists smsao.engine_vitals(interval);
drop table if exists smsao.scheduler_state;

delete from smsao.health_thresholds
where metric not in ('failed_sms_24h', 'sms_failure_rate', 'pending_credit_requests', 'orphaned_data');
alter table smsao.health_thresholds drop column grace_s, drop column recommendation;
alter table smsao.health_thresholds drop constraint health_thresholds_metric_check;
alter table smsao.health_thresholds add constraint health_thresholds_metric_check
  check (metric in ('failed_sms_24h', 'sms_failure_rate', 'pending_credit_requests', 'orphaned_data'));
