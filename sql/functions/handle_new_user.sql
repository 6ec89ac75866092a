-- Every auth.users row has a profile and the 'user' role. SECURITY DEFINER because
-- the auth service inserting users has no rights on public tables.
-- Statement-level, with the inserted rows as a transition table: importing 100,000 users
-- in one statement writes their profiles in one statement and their roles in another, so
-- the statement triggers of profiles (health counters, cache notifications) run once,
-- not once per user.
-- The name is read through to_jsonb(n): the contract promises only (id, email,
-- created_at) of an existing auth.users, and `raw_user_meta_data` on a table without
-- that column would make every sign-up fail.
create or replace function smsao.handle_new_user() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  -- An anti-join rather than ON CONFLICT (speculative insertion costs about twice a plain
  -- insert per row): a profile or role can already exist only if another trigger on
  -- auth.users wrote it (a Supabase project's own handle_new_user), in this statement.
  insert into public.profiles (user_id, email, full_name)
  select n.id, n.email, nullif(pg_catalog.to_jsonb(n) #>> '{raw_user_meta_data,full_name}', '')
  from new_users n
  where not exists (select from public.profiles p where p.user_id = n.id);
  insert into public.user_roles (user_id, role)
  select n.id, 'user' from new_users n
  where not exists (select from public.user_roles r where r.user_id = n.id and r.role = 'user');
  return null;
end
$$;
revoke all on function smsao.handle_new_user() from public, anon, authenticated, service_role;
