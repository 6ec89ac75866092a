alter table public.admin_audit_logs enable row level security;
revoke all on table public.admin_audit_logs from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.admin_audit_logs to service_role;
grant select on table public.admin_audit_logs to authenticated;

create policy admin_audit_logs_admin_select on public.admin_audit_logs for select to authenticated
  using ((select smsao.is_admin()));
