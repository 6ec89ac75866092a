-- Removes what 0009_replication added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the health check as it was before.
delete from smsao.health_thresholds
where metric in ('replication_standbys', 'replication_lag_bytes', 'replication_lag_s');
alter table smsao.health_thresholds drop constraint health_thresholds_metric_check;
alter table smsao.health_thresholds add constraint health_thresholds_metric_check
  check (metric in ('failed_sms_24h', 'sms_failure_rate', 'pending_credit_requests', 'orphaned_data',
                    'longest_transaction_s', 'connection_usage', 'xid_age_ratio', 'blocked_sessions',
                    'database_size_bytes', 'health_snapshot_age_s', 'cron_failures_1h',
                    'security_refusals_1h', 'wal_archive_failing', 'backup_age_s', 'restore_drill_age_s'));
drop function if exists smsao.replication_vitals();
drop function if exists smsao.replication_unknown(text);
