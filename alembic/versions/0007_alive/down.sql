-- Removes what 0007_alive added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the definitions of 0006.
drop function if exists smsao.dashboard_calls_per_hour(integer);
drop function if exists smsao.dashboard_calls_since(timestamptz);
drop function if exists smsao.dashboard_call_totals();
drop function if exists smsao.scheduler_unknown(text);
drop function if exists smsao.server_started_at();
alter table smsao.scheduler_state drop column if exists scheduled_by;
drop procedure if exists smsao.run_scheduled_drill();
drop procedure if exists smsao.run_scheduled_backup();
drop function if exists smsao.scheduled_drill();
drop function if exists smsao.scheduled_backup();
drop function if exists smsao.run_recovery_program(text);
drop function if exists smsao.table_count_problems(jsonb, jsonb, jsonb);
drop function if exists smsao.package_table_counts();
-- smsao.cron_jobs() and the health report call these until restore.sql (next) puts back
-- 0006's definitions; SQL and PL/pgSQL bodies record no dependency, so the drops succeed.
drop function if exists smsao.recovery_cron_jobs();
drop function if exists smsao.configure_scheduled_recovery(text);
drop function if exists smsao.recovery_vitals();
drop function if exists smsao.record_recovery_run(text, timestamptz, timestamptz, boolean, text, jsonb, text);
drop table if exists smsao.recovery_config;
drop table if exists smsao.recovery_runs;

delete from smsao.health_thresholds where metric in ('wal_archive_failing', 'backup_age_s', 'restore_drill_age_s');
alter table smsao.health_thresholds drop constraint health_thresholds_metric_check;
alter table smsao.health_thresholds add constraint health_thresholds_metric_check
  check (metric in ('failed_sms_24h', 'sms_failure_rate', 'pending_credit_requests', 'orphaned_data',
                    'longest_transaction_s', 'connection_usage', 'xid_age_ratio', 'blocked_sessions',
                    'database_size_bytes', 'health_snapshot_age_s', 'cron_failures_1h',
                    'security_refusals_1h'));
