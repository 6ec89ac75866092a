alter table public.user_roles enable row level security;
revoke all on table public.user_roles from anon, authenticated, service_role;
grant select, insert, update, delete on table public.user_roles to service_role;
grant select on table public.user_roles to authenticated;

-- Roles are granted by the backend only; users see their own, admins all.
create policy user_roles_select on public.user_roles for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
