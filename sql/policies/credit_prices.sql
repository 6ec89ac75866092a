-- Admins maintain prices (each change audited by a trigger); the backend reads them.
alter table public.credit_prices enable row level security;
revoke all on table public.credit_prices from public, anon, authenticated, service_role;
grant select on table public.credit_prices to service_role;
grant select, insert, update, delete on table public.credit_prices to authenticated;

drop policy if exists credit_prices_admin on public.credit_prices;
create policy credit_prices_admin on public.credit_prices for all to authenticated
  using ((select smsao.is_admin())) with check ((select smsao.is_admin()));
drop policy if exists credit_prices_service_read on public.credit_prices;
create policy credit_prices_service_read on public.credit_prices for select to service_role
  using (true);
