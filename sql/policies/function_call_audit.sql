alter table public.function_call_audit enable row level security;
revoke all on table public.function_call_audit from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.function_call_audit to service_role;
grant select on table public.function_call_audit to authenticated;

create policy function_call_audit_admin_select on public.function_call_audit for select to authenticated
  using ((select smsao.is_admin()));
