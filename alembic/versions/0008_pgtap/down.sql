-- Removes what 0008_pgtap added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the counters of 0006 that count every call.
drop function if exists smsao.in_verify_run();
drop table if exists smsao.verify_runs;
