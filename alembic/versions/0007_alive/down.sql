-- Removes what 0007_alive added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the definitions of 0006.
drop function if exists smsao.dashboard_calls_per_hour(integer);
drop function if exists smsao.dashboard_calls_since(timestamptz);
drop function if exists smsao.dashboard_call_totals();
drop function if exists smsao.scheduler_unknown(text);
drop function if exists smsao.server_started_at();
alter table smsao.scheduler_state drop column if exists scheduled_by;
