-- Revision 0009_replication: the vital signs of replication (sql/functions/replication_vitals.sql)
-- get their thresholds beside the others (CONTRACT section 3).
-- replication_standbys is judged by how many expected standbys are missing (the health
-- check compares replication_standbys_missing): a warning from one missing standby, as
-- writes then either block (synchronous) or are not yet safe anywhere else.
alter table smsao.health_thresholds drop constraint health_thresholds_metric_check;
alter table smsao.health_thresholds add constraint health_thresholds_metric_check
  check (metric in ('failed_sms_24h', 'sms_failure_rate', 'pending_credit_requests', 'orphaned_data',
                    'longest_transaction_s', 'connection_usage', 'xid_age_ratio', 'blocked_sessions',
                    'database_size_bytes', 'health_snapshot_age_s', 'cron_failures_1h',
                    'security_refusals_1h', 'wal_archive_failing', 'backup_age_s', 'restore_drill_age_s',
                    'replication_standbys', 'replication_lag_bytes', 'replication_lag_s'));

insert into smsao.health_thresholds (metric, warning_at, critical_at, grace_s, recommendation, description) values
  ('replication_standbys', 1, null, null, 'check_replication',
   'standbys streaming from this primary; warning_at/critical_at count the MISSING ones: standbys expected '
   '(synchronous_standby_names, or the physical replication slots if more) minus those streaming'),
  ('replication_lag_bytes', 16777216, 1073741824, null, 'check_replication',
   'largest replay lag of a streaming standby, in bytes of WAL (16 MB: pg_auto_failover''s promotion threshold)'),
  ('replication_lag_s', 30, 300, null, 'check_replication',
   'largest replay lag of a streaming standby, in seconds')
on conflict (metric) do nothing;
