alter table public.performance_samples enable row level security;
revoke all on table public.performance_samples from anon, authenticated, service_role;
grant select, insert, update, delete on table public.performance_samples to service_role;
grant select on table public.performance_samples to authenticated;

create policy performance_samples_admin_select on public.performance_samples for select to authenticated
  using ((select smsao.is_admin()));
