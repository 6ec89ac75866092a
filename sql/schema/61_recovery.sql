-- Revision 0007_alive: backups and restore drills as vital signs (CONTRACT section 3), and
-- the embedded database's own backup schedule (section 4).

-- Every `smsao-db backup` and `drill` run, and every run of the scheduled backup and drill
-- jobs, on any server: the health check reads the newest successful one of each kind
-- (backup_age_s, restore_drill_age_s). Written only through smsao.record_recovery_run().
-- A few rows a day; kept (a year of them is a few hundred kilobytes).
create table smsao.recovery_runs (
  id          bigint generated always as identity primary key,
  kind        text not null check (kind in ('backup', 'drill')),
  started_at  timestamptz not null,
  finished_at timestamptz not null,
  ok          boolean not null,
  error       text,
  -- 'runner' (smsao-db backup / drill) or 'pg_cron' (the scheduled jobs of the embedded database)
  run_by      text not null check (run_by in ('runner', 'pg_cron')),
  -- what the run did: the backup's label and type, the row counts around it, the drill's steps
  detail      jsonb not null default '{}'::jsonb,
  check (finished_at >= started_at),
  check (ok = (error is null))
);
create index recovery_runs_newest_ok_idx on smsao.recovery_runs (kind, finished_at desc) where ok;

-- Where the embedded database keeps its scheduled backups: the program pg_cron runs as the
-- server's OS user (a script `smsao-db up` writes beside pgBackRest's configuration), and
-- the cluster it belongs to. Only `smsao-db up` writes this row (smsao.configure_scheduled_recovery);
-- on a server given by URL there is none, so its backups are not scheduled by the package.
-- system_identifier: a copy of the cluster made another way (pg_basebackup to a new server,
-- a logical dump restored elsewhere) keeps the row but not the identifier, and schedules nothing.
create table smsao.recovery_config (
  singleton         boolean primary key default true check (singleton),
  system_identifier numeric not null,
  program           text not null check (program <> ''),
  configured_at     timestamptz not null default now()
);

alter table smsao.health_thresholds drop constraint health_thresholds_metric_check;
alter table smsao.health_thresholds add constraint health_thresholds_metric_check
  check (metric in ('failed_sms_24h', 'sms_failure_rate', 'pending_credit_requests', 'orphaned_data',
                    'longest_transaction_s', 'connection_usage', 'xid_age_ratio', 'blocked_sessions',
                    'database_size_bytes', 'health_snapshot_age_s', 'cron_failures_1h',
                    'security_refusals_1h', 'wal_archive_failing', 'backup_age_s', 'restore_drill_age_s'));

insert into smsao.health_thresholds (metric, warning_at, critical_at, grace_s, recommendation, description) values
  ('wal_archive_failing', 1, 1, null, 'check_wal_archiving',
   'WAL segments that failed to archive since the last success (pg_stat_archiver); pg_wal grows until they do'),
  ('backup_age_s', 93600, 180000, null, 'take_backup',
   'seconds since the newest successful backup (26 h: one daily backup missed; 50 h: two)'),
  ('restore_drill_age_s', 691200, 7948800, null, 'run_restore_drill',
   'seconds since the newest successful restore drill (8 days: one weekly drill missed; 92 days: a quarter)')
on conflict (metric) do nothing;
