-- Removes what 0013_scale_speed changed.

-- The audit trails' keys as 0011_scale made them: (id, created_at), and the index on
-- created_at (each partition's index takes the name it had).
alter table public.admin_audit_logs drop constraint admin_audit_logs_pkey,
  add constraint admin_audit_logs_pkey primary key (id, created_at);
create index admin_audit_logs_created_idx on public.admin_audit_logs (created_at);
alter table public.pii_access_audit drop constraint pii_access_audit_pkey,
  add constraint pii_access_audit_pkey primary key (id, created_at);
create index pii_access_audit_created_idx on public.pii_access_audit (created_at);
alter table public.function_call_audit drop constraint function_call_audit_pkey,
  add constraint function_call_audit_pkey primary key (id, created_at);
create index function_call_audit_created_idx on public.function_call_audit (created_at);
