-- Removes what 0007_alive added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the definitions of 0006.
drop function if exists smsao.dashboard_calls_per_hour(integer);
drop function if exists smsao.dashboard_calls_since(timestamptz);
drop function if exists smsao.dashboard_call_totals();
