
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
