alter table public.pii_access_audit enable row level security;
revoke all on table public.pii_access_audit from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.pii_access_audit to service_role;
grant select on table public.pii_access_audit to authenticated;

create policy pii_access_audit_admin_select on public.pii_access_audit for select to authenticated
  using ((select smsao.is_admin()));
