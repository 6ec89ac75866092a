alter table public.system_health_snapshots enable row level security;
revoke all on table public.system_health_snapshots from anon, authenticated, service_role;
grant select, insert, update, delete on table public.system_health_snapshots to service_role;
grant select on table public.system_health_snapshots to authenticated;

create policy system_health_snapshots_admin_select on public.system_health_snapshots for select to authenticated
  using ((select smsao.is_admin()));
