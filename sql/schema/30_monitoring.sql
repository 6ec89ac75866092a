-- Monitoring state (revision 0003_monitoring): health thresholds, the live counters
-- behind the health check, and the indexes that keep its other metrics cheap.
-- Access control for these tables is in sql/policies/health_*.sql.

-- What decides the health status. A DBA changes a row (no migration needed):
--   update smsao.health_thresholds set warning_at = 200 where metric = 'failed_sms_24h';
-- A metric is 'warning' from warning_at and 'critical' from critical_at (NULL: that level
-- is never reached). No active SMS configuration is always critical and has no row here.
-- min_sample: a rate is judged only once its window holds at least this many events.
create table smsao.health_thresholds (
  metric      text primary key
              check (metric in ('failed_sms_24h', 'sms_failure_rate',
                                'pending_credit_requests', 'orphaned_data')),
  warning_at  numeric check (warning_at >= 0),
  critical_at numeric check (critical_at >= 0),
  min_sample  bigint not null default 0 check (min_sample >= 0),
  description text not null default '',
  check (critical_at >= warning_at)
);
comment on table smsao.health_thresholds is
  'Thresholds of production_system_health_check(): warning from warning_at, critical from critical_at.';

insert into smsao.health_thresholds (metric, warning_at, critical_at, min_sample, description) values
  ('failed_sms_24h', 100, 1000, 0,
   'SMS with status failed created in the last 24 hours'),
  ('sms_failure_rate', 0.10, 0.25, 100,
   'failed / all SMS created since the start of the hour 24 hours ago (judged from min_sample SMS)'),
  ('pending_credit_requests', 50, null, 0,
   'credit requests waiting for an admin; a backlog, never critical by default'),
  ('orphaned_data', 1000, null, 0,
   'sms_logs and otp_codes rows whose user_id has no profile (see production_system_health_check)')
on conflict (metric) do nothing;

-- Live counters, kept by statement-level triggers in the same transaction as the change
-- (sql/functions/health_counters.sql). A metric's value is sum(value) over its rows:
-- a writer adds its delta to any row of the metric that no other transaction holds
-- (FOR UPDATE SKIP LOCKED) or inserts a new one, so concurrent writers never wait on
-- each other; the number of rows per metric stays near the peak number of concurrent
-- writers, and compaction folds them back. `bucket` is the hour (UTC) of created_at for
-- per-hour metrics and -infinity for the others.
create table smsao.health_counters (
  id     bigint generated always as identity primary key,
  metric text not null,
  bucket timestamptz not null default '-infinity',
  value  bigint not null default 0
) with (fillfactor = 50);  -- room on the page for HOT updates of `value`
create index health_counters_metric_idx on smsao.health_counters (metric, bucket);
comment on table smsao.health_counters is
  'Health metrics as sharded deltas: value of a metric = sum(value) of its rows (per bucket).';

-- The user ids that rows of sms_logs / otp_codes refer to but that have no profile (the
-- owners of orphaned rows). Kept in step by the same triggers, so that deleting rows (the
-- retention cleanup deletes millions) asks this small table whether a row was orphaned
-- instead of probing profiles once per owner. An id stays after its last row is gone:
-- the table grows only with deleted accounts that had rows.
create table smsao.missing_owners (
  user_id uuid primary key
);
comment on table smsao.missing_owners is
  'User ids referenced by sms_logs/otp_codes rows that have no profile (kept by triggers).';

-- failed_sms_24h reads the failures of the window's first, partial hour from here;
-- the index holds only failed messages, so its size follows what it counts.
create index sms_logs_failed_created_idx on public.sms_logs (created_at) where status = 'failed';
-- Counting (and locking) a deleted or re-created user's OTPs for the orphaned-data counter.
create index otp_codes_user_idx on public.otp_codes (user_id) where user_id is not null;
