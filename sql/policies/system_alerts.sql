alter table public.system_alerts enable row level security;
revoke all on table public.system_alerts from anon, authenticated, service_role;
grant select, insert, update, delete on table public.system_alerts to service_role;
grant select on table public.system_alerts to authenticated;
-- Admins acknowledge alerts; nothing else about an alert changes.
grant update (acknowledged_at) on table public.system_alerts to authenticated;

create policy system_alerts_admin_select on public.system_alerts for select to authenticated
  using ((select smsao.is_admin()));
create policy system_alerts_admin_ack on public.system_alerts for update to authenticated
  using ((select smsao.is_admin()))
  with check ((select smsao.is_admin()));
