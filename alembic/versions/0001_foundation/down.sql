-- Removes everything 0001_foundation created. The roles stay (they are cluster-wide
-- and may serve other databases); Supabase's own auth objects are never touched.
drop trigger if exists smsao_on_auth_user_created on auth.users;

drop table if exists
  public.performance_samples, public.system_alerts, public.system_health_snapshots,
  public.function_call_audit, public.pii_access_audit, public.admin_audit_logs,
  public.contact_import_jobs, public.otp_codes, public.sms_logs, public.campaigns,
  public.contacts, public.credit_transactions, public.credit_requests,
  public.sms_configurations, public.user_roles, public.profiles;

drop function if exists public.has_role(uuid, public.app_role);
drop type if exists public.app_role;
drop schema if exists smsao cascade;

-- The auth shim: only objects this package created (marked 'smsao-db shim').
do $$
declare
  shim constant text := 'smsao-db shim';
begin
  if to_regprocedure('auth.jwt()') is not null
     and obj_description('auth.jwt()'::regprocedure, 'pg_proc') = shim then
    drop function auth.jwt();
  end if;
  if to_regprocedure('auth.uid()') is not null
     and obj_description('auth.uid()'::regprocedure, 'pg_proc') = shim then
    drop function auth.uid();
  end if;
  if to_regprocedure('auth.role()') is not null
     and obj_description('auth.role()'::regprocedure, 'pg_proc') = shim then
    drop function auth.role();
  end if;
  if to_regclass('auth.sessions') is not null
     and obj_description('auth.sessions'::regclass, 'pg_class') = shim then
    drop table auth.sessions;
  end if;
  if to_regclass('auth.users') is not null
     and obj_description('auth.users'::regclass, 'pg_class') = shim then
    drop table auth.users;
  end if;
  if to_regnamespace('auth') is not null
     and obj_description('auth'::regnamespace, 'pg_namespace') = shim then
    drop schema auth;
  end if;
end
$$;
