alter table public.sms_configurations enable row level security;
revoke all on table public.sms_configurations from anon, authenticated, service_role;
grant select, insert, update, delete on table public.sms_configurations to service_role;
grant select, insert, update, delete on table public.sms_configurations to authenticated;

-- Gateways are configured by admins only.
create policy sms_configurations_admin on public.sms_configurations for all to authenticated
  using ((select smsao.is_admin()))
  with check ((select smsao.is_admin()));
