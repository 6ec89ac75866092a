-- Every auth.users row has a profile and the 'user' role. SECURITY DEFINER because
-- the auth service inserting users has no rights on public tables.
-- The name is read through to_jsonb(new): the contract promises only (id, email,
-- created_at) of an existing auth.users, and `new.raw_user_meta_data` on a table
-- without that column would make every sign-up fail.
create function smsao.handle_new_user() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  insert into public.profiles (user_id, email, full_name)
  values (new.id, new.email, nullif(pg_catalog.to_jsonb(new) #>> '{raw_user_meta_data,full_name}', ''))
  on conflict (user_id) do nothing;
  insert into public.user_roles (user_id, role)
  values (new.id, 'user')
  on conflict (user_id, role) do nothing;
  return new;
end
$$;
revoke all on function smsao.handle_new_user() from public;
