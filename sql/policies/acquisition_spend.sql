-- Admins maintain the spend per month and channel (each change audited by a trigger); the backend reads them.
alter table public.acquisition_spend enable row level security;
revoke all on table public.acquisition_spend from public, anon, authenticated, service_role;
grant select on table public.acquisition_spend to service_role;
grant select, insert, update, delete on table public.acquisition_spend to authenticated;

drop policy if exists acquisition_spend_admin on public.acquisition_spend;
create policy acquisition_spend_admin on public.acquisition_spend for all to authenticated
  using ((select smsao.is_admin())) with check ((select smsao.is_admin()));
drop policy if exists acquisition_spend_service_read on public.acquisition_spend;
create policy acquisition_spend_service_read on public.acquisition_spend for select to service_role
  using (true);
