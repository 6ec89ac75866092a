-- Rate-limit state: one row per (caller, operation) holding the admitted attempts still
-- inside the window, so an exact sliding window costs one row lock per admitted call.
-- UNLOGGED: it is hot, and losing it in a crash only forgets recent attempts.
-- fillfactor leaves room for HOT updates (no indexed column changes).
create unlogged table smsao.rate_limit_windows (
  caller_key     text not null,
  operation_type text not null,
  hits           timestamptz[] not null,
  admitted       boolean not null default true,
  -- Past this instant every hit has left its window: the row can be pruned.
  window_ends    timestamptz not null,
  -- The longest window any call on this key has used: hits are kept that long, so a call
  -- with a shorter window than an earlier one stays exact (a longer one than ever before
  -- cannot see attempts already dropped). At most the newest 10,000 (the largest
  -- max_attempts) are kept: no decision needs more. With one window per operation, as
  -- smsao.operation_limits has, the array never holds more than that limit.
  retain_window  interval not null,
  primary key (caller_key, operation_type)
) with (fillfactor = 70);
-- Past ~250 hits (a limit above the contract's 60) the array is TOASTed and rewritten on
-- every admitted call; compressing timestamps gains little and cost over a quarter of it
-- (bench/rate_limit_bench.py, (d*) rows).
alter table smsao.rate_limit_windows alter column hits set storage external;

-- Rate limits of the critical operations (CONTRACT section 3). A table, so an operator
-- can tighten a limit without a migration.
create table smsao.operation_limits (
  operation_type text primary key,
  max_attempts   integer not null check (max_attempts between 1 and 10000),
  window_minutes integer not null check (window_minutes between 1 and 10080)
);
insert into smsao.operation_limits values
  ('financial_transaction', 5, 60),
  ('admin_access', 60, 1),
  ('profile_update', 10, 1),
  ('contact_operation', 60, 1);
