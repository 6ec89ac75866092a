create or replace function public.admin_set_user_status(user_id uuid, status text) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started    timestamptz := pg_catalog.clock_timestamp();
  args       jsonb := pg_catalog.jsonb_build_object('user_id', user_id, 'status', status);
  old_status text;
begin
  perform smsao.count_call('admin_set_user_status');
  if admin_set_user_status.user_id is null then
    raise exception 'user_id must not be NULL' using errcode = '22023';
  end if;
  if admin_set_user_status.status is null
     or admin_set_user_status.status not in ('active', 'suspended', 'pending', 'deleted') then
    raise exception 'status must be one of active, suspended, pending, deleted; got %',
      coalesce(pg_catalog.quote_literal(admin_set_user_status.status), 'NULL') using errcode = '22023';
  end if;
  if admin_set_user_status.user_id = smsao.caller_id() then
    raise exception 'user_id: an admin cannot change their own status' using errcode = '22023';
  end if;
  perform smsao.guard_admin('admin_set_user_status', args);

  select p.status into old_status from public.profiles p
  where p.user_id = admin_set_user_status.user_id for update;
  if not found then
    raise exception 'user_id: no user %', admin_set_user_status.user_id using errcode = '22023';
  end if;
  update public.profiles p set status = admin_set_user_status.status
  where p.user_id = admin_set_user_status.user_id;

  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'admin_set_user_status', 'profiles', admin_set_user_status.user_id::text,
          pg_catalog.jsonb_build_object('status', old_status),
          pg_catalog.jsonb_build_object('status', admin_set_user_status.status));
  perform smsao.audit_call('admin_set_user_status', args, 'ok', started);
exception when others then
  perform smsao.count_failure('admin_set_user_status', sqlstate);
  raise;
end
$$;
revoke all on function public.admin_set_user_status(uuid, text) from public, anon, authenticated, service_role;
grant execute on function public.admin_set_user_status(uuid, text) to authenticated, service_role;

-- A user's details for support, PII included; every call leaves a pii_access_audit row.
create or replace function public.admin_get_user_details(user_id uuid) returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  args    jsonb := pg_catalog.jsonb_build_object('user_id', user_id);
  details jsonb;
begin
  perform smsao.count_call('admin_get_user_details');
  if admin_get_user_details.user_id is null then
    raise exception 'user_id must not be NULL' using errcode = '22023';
  end if;
  perform smsao.guard_admin('admin_get_user_details', args);

  select pg_catalog.jsonb_build_object(
           'user_id', p.user_id, 'full_name', p.full_name, 'email', p.email, 'phone', p.phone,
           'status', p.status, 'credits', p.credits, 'created_at', p.created_at,
           'roles', (select coalesce(pg_catalog.jsonb_agg(r.role order by r.role), '[]'::jsonb)
                     from public.user_roles r where r.user_id = p.user_id),
           'contacts', (select pg_catalog.count(*) from public.contacts c where c.user_id = p.user_id),
           'campaigns', (select pg_catalog.count(*) from public.campaigns c where c.user_id = p.user_id),
           'pending_credit_requests', (select pg_catalog.count(*) from public.credit_requests c
                                       where c.user_id = p.user_id and c.status = 'pending'))
  into details
  from public.profiles p where p.user_id = admin_get_user_details.user_id;
  if details is null then
    raise exception 'user_id: no user %', admin_get_user_details.user_id using errcode = '22023';
  end if;

  insert into public.pii_access_audit (accessor_id, subject_user_id, table_name, record_id, fields, purpose)
  values (smsao.caller_id(), admin_get_user_details.user_id, 'profiles', admin_get_user_details.user_id::text,
          array['full_name', 'email', 'phone'], 'admin_get_user_details');
  perform smsao.audit_call('admin_get_user_details', args, 'ok', started);
  return details;
exception when others then
  perform smsao.count_failure('admin_get_user_details', sqlstate);
  raise;
end
$$;
revoke all on function public.admin_get_user_details(uuid) from public, anon, authenticated, service_role;
grant execute on function public.admin_get_user_details(uuid) to authenticated, service_role;

-- The admins' list of users: what a list view needs, without PII (no name, email or
-- phone: those come one user at a time from admin_get_user_details, which is audited).
-- Admins read only their own row of public.profiles directly. Newest first, paged.
create or replace function public.admin_list_users(page_size integer default 50, page integer default 1)
  returns table (user_id uuid, status text, credits integer, is_admin boolean,
                 created_at timestamptz, updated_at timestamptz)
  language plpgsql security definer
  set search_path = ''
as $$
declare
  args jsonb := pg_catalog.jsonb_build_object('page_size', page_size, 'page', page);
begin
  perform smsao.count_call('admin_list_users');
  if page_size is null or page_size not between 1 and 1000 then
    raise exception 'page_size must be between 1 and 1000, got %', coalesce(page_size::text, 'NULL')
      using errcode = '22023';
  end if;
  if page is null or page < 1 then
    raise exception 'page must be a positive integer, got %', coalesce(page::text, 'NULL') using errcode = '22023';
  end if;
  perform smsao.guard_admin('admin_list_users', args);
  return query
  select p.user_id, p.status, p.credits,
         exists (select from public.user_roles r where r.user_id = p.user_id and r.role = 'admin'),
         p.created_at, p.updated_at
  from public.profiles p
  order by p.created_at desc, p.user_id
  limit page_size offset (page::bigint - 1) * page_size;
exception when others then
  perform smsao.count_failure('admin_list_users', sqlstate);
  raise;
end
$$;
revoke all on function public.admin_list_users(integer, integer) from public, anon, authenticated, service_role;
grant execute on function public.admin_list_users(integer, integer) to authenticated, service_role;
