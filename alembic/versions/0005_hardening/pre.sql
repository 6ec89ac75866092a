-- Hand-written steps 0005_hardening runs before its frozen up.sql: what a re-applied
-- source file cannot do by itself.
-- The rate limiter's state moves to smsao.rate_limit_keys / rate_limit_hits (40_hardening.sql).
-- Its rows are hot state that a crash may lose anyway: every key starts afresh.
drop table smsao.rate_limit_windows;
-- prune_rate_limit_state gains a bound on the keys per call (a new signature).
drop function smsao.prune_rate_limit_state();
