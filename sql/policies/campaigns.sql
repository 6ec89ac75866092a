alter table public.campaigns enable row level security;
revoke all on table public.campaigns from anon, authenticated, service_role;
grant select, insert, update, delete on table public.campaigns to service_role;
grant select, insert, update, delete on table public.campaigns to authenticated;

-- A user whose account is not active (suspended, pending, deleted) writes nothing.
drop policy if exists campaigns_select on public.campaigns;
create policy campaigns_select on public.campaigns for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
drop policy if exists campaigns_insert_own on public.campaigns;
create policy campaigns_insert_own on public.campaigns for insert to authenticated
  with check (user_id = (select auth.uid()) and (select smsao.is_active_user()));
drop policy if exists campaigns_update_own on public.campaigns;
create policy campaigns_update_own on public.campaigns for update to authenticated
  using (user_id = (select auth.uid()) and (select smsao.is_active_user()))
  with check (user_id = (select auth.uid()));
drop policy if exists campaigns_delete_own on public.campaigns;
create policy campaigns_delete_own on public.campaigns for delete to authenticated
  using (user_id = (select auth.uid()) and (select smsao.is_active_user()));
