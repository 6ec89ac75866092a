-- Revision 0013_scale_speed (issue 19).

-- The audit trails' primary key leads with the partition key: (created_at, id) instead of
-- (id, created_at), and the separate index on created_at goes. One index fewer to write per
-- audit row (a single-row INSERT into a partitioned table pays for routing it and opening
-- the partition, about what the second index cost: docs/scaling.md, section 2c), and the
-- key serves what that index served (the retention's batches by created_at) and the
-- dashboard's pages (order by created_at desc, id desc) by itself. Its uniqueness is the
-- same: the same two columns. No query looks a row up by id alone. The partitions' keys are
-- rebuilt with it (the migration holds the tables for that time).
alter table public.admin_audit_logs drop constraint admin_audit_logs_pkey,
  add constraint admin_audit_logs_pkey primary key (created_at, id);
drop index public.admin_audit_logs_created_idx;
alter table public.pii_access_audit drop constraint pii_access_audit_pkey,
  add constraint pii_access_audit_pkey primary key (created_at, id);
drop index public.pii_access_audit_created_idx;
alter table public.function_call_audit drop constraint function_call_audit_pkey,
  add constraint function_call_audit_pkey primary key (created_at, id);
drop index public.function_call_audit_created_idx;
