-- Revision 0006_vitals: the vital signs of the engine and of the scheduler in the health
-- check, with their thresholds beside the application's (CONTRACT section 3).
-- Each threshold row now also names its recommendation code, and blocked_sessions its
-- grace: a session counts as blocked once it has waited on a lock that long.
alter table smsao.health_thresholds drop constraint health_thresholds_metric_check;
alter table smsao.health_thresholds add constraint health_thresholds_metric_check
  check (metric in ('failed_sms_24h', 'sms_failure_rate', 'pending_credit_requests', 'orphaned_data',
                    'longest_transaction_s', 'connection_usage', 'xid_age_ratio', 'blocked_sessions',
                    'database_size_bytes', 'health_snapshot_age_s', 'cron_failures_1h',
                    'security_refusals_1h'));
alter table smsao.health_thresholds
  add column grace_s numeric check (grace_s >= 0),
  add column recommendation text;
update smsao.health_thresholds set recommendation = case metric
  when 'failed_sms_24h' then 'investigate_failed_sms'
  when 'sms_failure_rate' then 'investigate_failed_sms'
  when 'pending_credit_requests' then 'review_pending_credit_requests'
  when 'orphaned_data' then 'cleanup_orphaned_data' end;

insert into smsao.health_thresholds (metric, warning_at, critical_at, grace_s, recommendation, description) values
  ('longest_transaction_s', 300, 3600, null, 'investigate_long_transactions',
   'age in seconds of the oldest open transaction of this database (active or idle in transaction), the checker excluded'),
  ('connection_usage', 0.80, 0.95, null, 'review_connection_pooling',
   'client connections in use / max_connections'),
  ('xid_age_ratio', 0.50, 0.75, null, 'vacuum_freeze',
   'age(datfrozenxid) of the worst database / 2^31 (wraparound at 1)'),
  ('blocked_sessions', 1, 10, 30, 'investigate_lock_waits',
   'sessions of this database waiting on a lock held by another session for longer than grace_s seconds'),
  ('database_size_bytes', null, null, null, null,
   'pg_database_size of this database (reported; set thresholds to watch it)'),
  ('health_snapshot_age_s', 420, 600, null, 'check_scheduler',
   'seconds since the newest health snapshot while the jobs are scheduled (they run every 5 minutes)'),
  ('cron_failures_1h', 1, 5, null, 'check_scheduler',
   'failed runs of this package''s pg_cron jobs in the last hour'),
  ('security_refusals_1h', 100, 1000, null, 'investigate_refusals',
   'critical-operation calls refused (denied or rate limited) in the last hour, rolled-back ones included')
on conflict (metric) do nothing;

-- Whether this database's pg_cron jobs are scheduled, as `smsao-db schedule apply/remove`
-- last left them (smsao.record_schedule_state). The health check reads cron.job itself
-- when pg_cron lives in this database; where it lives in another one, this row is how the
-- scheduler check knows the jobs should be running.
create table smsao.scheduler_state (
  singleton      boolean primary key default true check (singleton),
  jobs_scheduled boolean not null,
  cron_database  text,
  changed_at     timestamptz not null default now()
);
