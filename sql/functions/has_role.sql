-- Whether a user holds an application role. SECURITY DEFINER so RLS policies can ask
-- without recursing into user_roles' own policies. False for NULL arguments.
create or replace function public.has_role(user_id uuid, role public.app_role) returns boolean
  language sql stable security definer
  set search_path = ''
as $$
  select exists (
    select from public.user_roles ur
    where ur.user_id = has_role.user_id and ur.role = has_role.role
  )
$$;
revoke all on function public.has_role(uuid, public.app_role) from public, anon, authenticated, service_role;
grant execute on function public.has_role(uuid, public.app_role) to authenticated, service_role;

-- Whether the caller is an admin whose account is active: what RLS policies ask.
create or replace function smsao.is_admin() returns boolean
  language sql stable security definer
  set search_path = ''
as $$
  select exists (
    select from public.user_roles ur
    join public.profiles p on p.user_id = ur.user_id
    where ur.user_id = auth.uid() and ur.role = 'admin' and p.status = 'active'
  )
$$;
revoke all on function smsao.is_admin() from public, anon, authenticated, service_role;
grant execute on function smsao.is_admin() to authenticated, service_role;
