alter table public.profiles enable row level security;
revoke all on table public.profiles from anon, authenticated, service_role;
grant select, insert, update, delete on table public.profiles to service_role;
grant select on table public.profiles to authenticated;
-- Users edit their own name and phone only: credits, status and email are not theirs to set.
grant update (full_name, phone) on table public.profiles to authenticated;

-- Everyone, admins included, reads only their own profile here: other users' names,
-- emails and phones are reached through public.admin_get_user_details(), which writes
-- pii_access_audit; list views use public.admin_list_users(), which carries no PII.
drop policy if exists profiles_select on public.profiles;
create policy profiles_select on public.profiles for select to authenticated
  using (user_id = (select auth.uid()));
drop policy if exists profiles_update_own on public.profiles;
create policy profiles_update_own on public.profiles for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
