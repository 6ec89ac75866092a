-- Frozen by scripts/freeze_sql.py for revision 0001_foundation. Do not edit.

-- ==== sql/schema/00_roles.sql ====
-- The three PostgREST roles. Supabase already has them (and their grants to
-- `authenticator`); elsewhere they are created here. Roles are cluster-wide, so a
-- downgrade leaves them in place for the other databases that may use them.
do $$
begin
  if not exists (select from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select from pg_catalog.pg_roles where rolname = 'service_role') then
    -- The trusted backend: like Supabase's service_role it is not subject to RLS.
    create role service_role nologin noinherit bypassrls;
  end if;
end
$$;

grant usage on schema public to anon, authenticated, service_role;

-- ==== sql/schema/01_auth.sql ====
-- The slice of Supabase's `auth` schema this package relies on (CONTRACT section 1).
-- Each object is created only when missing, so a Supabase database keeps its own.
-- What we create carries the comment 'smsao-db shim' so a downgrade removes exactly that.
do $$
begin
  if to_regnamespace('auth') is null then
    create schema auth;
    comment on schema auth is 'smsao-db shim';
  end if;
  if to_regclass('auth.users') is null then
    create table auth.users (
      id                 uuid primary key,
      email              text,
      raw_user_meta_data jsonb not null default '{}'::jsonb,
      created_at         timestamptz not null default now(),
      updated_at         timestamptz not null default now()
    );
    comment on table auth.users is 'smsao-db shim';
  end if;

  if to_regclass('auth.sessions') is null then
    create table auth.sessions (
      id         uuid primary key,
      user_id    uuid not null references auth.users (id) on delete cascade,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      not_after  timestamptz
    );
    create index sessions_user_id_idx on auth.sessions (user_id);
    comment on table auth.sessions is 'smsao-db shim';
  end if;

  -- Claims come from request.jwt.claims (PostgREST >= 9) or, for older PostgREST,
  -- request.jwt.claim.<name>. After a transaction both read as '' and mean "absent".
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
      language sql stable set search_path = ''
      as $f$
        select coalesce(
          nullif(pg_catalog.current_setting('request.jwt.claim', true), ''),
          nullif(pg_catalog.current_setting('request.jwt.claims', true), '')
        )::jsonb
      $f$;
    comment on function auth.jwt() is 'smsao-db shim';
  end if;

  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
      language sql stable set search_path = ''
      as $f$
        select coalesce(
          nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
          nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
        )::uuid
      $f$;
    comment on function auth.uid() is 'smsao-db shim';
  end if;

  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text
      language sql stable set search_path = ''
      as $f$
        select coalesce(
          nullif(pg_catalog.current_setting('request.jwt.claim.role', true), ''),
          nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
        )::text
      $f$;
    comment on function auth.role() is 'smsao-db shim';
  end if;
end
$$;

grant usage on schema auth to anon, authenticated, service_role;

-- ==== sql/schema/02_internal.sql ====
-- Internal objects (helpers, configuration, hot state) live in `smsao`, a schema
-- PostgREST does not expose; only what the contract names lives in `public`.
create schema smsao;
comment on schema smsao is 'SMS AO internals: helpers, configuration and state not exposed as API';
grant usage on schema smsao to anon, authenticated, service_role;

create type public.app_role as enum ('admin', 'user');

-- ==== sql/schema/10_tables.sql ====
-- The platform's tables (CONTRACT section 2). Every column not in the contract has a
-- default or is nullable, so a trusted loader can insert the listed columns alone.
-- Access control (RLS, grants) for each table is in sql/policies/<table>.sql.

create table public.profiles (
  user_id    uuid primary key references auth.users (id) on delete cascade,
  full_name  text,
  email      text,
  phone      text check (phone ~ '^\+[1-9][0-9]{6,14}$'),
  status     text not null default 'active'
             check (status in ('active', 'suspended', 'pending', 'deleted')),
  credits    integer not null default 0 check (credits >= 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on column public.profiles.credits is
  'Balance; always equals sum(credit_transactions.amount) for the user (kept by triggers).';

create table public.user_roles (
  id         bigint generated always as identity primary key,
  user_id    uuid not null references auth.users (id) on delete cascade,
  role       public.app_role not null default 'user',
  created_at timestamptz not null default now(),
  unique (user_id, role)
);

create table public.sms_configurations (
  id           uuid primary key default gen_random_uuid(),
  gateway_name text not null,
  sender_id    text not null,
  is_active    boolean not null default false,
  -- Name of the secret in the secret store; credentials are never stored here.
  credentials_secret_name text,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);
create index sms_configurations_active_idx on public.sms_configurations (id) where is_active;

create table public.credit_requests (
  id           uuid primary key default gen_random_uuid(),
  user_id      uuid not null references public.profiles (user_id) on delete cascade,
  amount       integer not null check (amount > 0),
  status       text not null default 'pending'
               check (status in ('pending', 'approved', 'rejected')),
  reason       text,
  created_at   timestamptz not null default now(),
  processed_at timestamptz,
  processed_by uuid references auth.users (id) on delete set null,
  check ((status = 'pending') = (processed_at is null))
);
create index credit_requests_user_idx on public.credit_requests (user_id, created_at desc);
create index credit_requests_pending_idx on public.credit_requests (created_at) where status = 'pending';

-- The ledger. Append-only; profiles.credits is its running sum.
create table public.credit_transactions (
  id                bigint generated always as identity primary key,
  user_id           uuid not null references public.profiles (user_id) on delete cascade,
  amount            integer not null check (amount <> 0),
  kind              text not null default 'adjustment'
                    check (kind in ('credit_request', 'sms_charge', 'refund', 'adjustment')),
  credit_request_id uuid unique references public.credit_requests (id) on delete set null,
  created_at        timestamptz not null default now()
);
create index credit_transactions_user_idx on public.credit_transactions (user_id, created_at desc);

create table public.contacts (
  id         uuid primary key default gen_random_uuid(),
  user_id    uuid not null references public.profiles (user_id) on delete cascade,
  name       text not null default '',
  phone      text not null check (phone ~ '^\+[1-9][0-9]{6,14}$'),
  email      text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (user_id, phone)
);

create table public.campaigns (
  id         uuid primary key default gen_random_uuid(),
  user_id    uuid not null references public.profiles (user_id) on delete cascade,
  name       text not null,
  message    text not null default '',
  status     text not null default 'draft'
             check (status in ('draft', 'scheduled', 'sending', 'completed', 'cancelled', 'failed')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index campaigns_user_idx on public.campaigns (user_id, created_at desc);

-- High-volume log. No foreign key on user_id: logs are billing history and outlive
-- the account; rows whose owner is gone are reported as orphaned data by the health check.
create table public.sms_logs (
  id            bigint generated always as identity primary key,
  user_id       uuid not null,
  campaign_id   uuid references public.campaigns (id) on delete set null,
  recipient     text not null,
  message       text not null default '',
  status        text not null default 'queued'
                check (status in ('queued', 'sent', 'delivered', 'failed')),
  error_message text,
  created_at    timestamptz not null default now()
);
create index sms_logs_user_idx on public.sms_logs (user_id, created_at desc);
create index sms_logs_campaign_idx on public.sms_logs (campaign_id) where campaign_id is not null;

-- Only a hash of each code is stored. No foreign key: OTPs are also issued to phones
-- that have no account yet, and expire within minutes.
create table public.otp_codes (
  id          uuid primary key default gen_random_uuid(),
  user_id     uuid,
  phone       text not null,
  code_hash   text not null,
  purpose     text not null default 'login',
  attempts    integer not null default 0 check (attempts >= 0),
  expires_at  timestamptz not null default now() + interval '10 minutes',
  consumed_at timestamptz,
  created_at  timestamptz not null default now()
);
create index otp_codes_phone_idx on public.otp_codes (phone, purpose, created_at desc);
create index otp_codes_expires_idx on public.otp_codes (expires_at);

create table public.contact_import_jobs (
  id             uuid primary key default gen_random_uuid(),
  user_id        uuid not null references public.profiles (user_id) on delete cascade,
  status         text not null default 'pending'
                 check (status in ('pending', 'processing', 'completed', 'failed')),
  file_name      text,
  total_rows     integer not null default 0 check (total_rows >= 0),
  processed_rows integer not null default 0 check (processed_rows >= 0),
  error_message  text,
  created_at     timestamptz not null default now(),
  completed_at   timestamptz
);
create index contact_import_jobs_user_idx on public.contact_import_jobs (user_id, created_at desc);
create index contact_import_jobs_finished_idx on public.contact_import_jobs (completed_at)
  where status in ('completed', 'failed');

-- Audit trails: append-only, no foreign keys (an audit row outlives its subject).
create table public.admin_audit_logs (
  id           bigint generated always as identity primary key,
  admin_id     uuid,
  action       text not null,
  target_table text,
  target_id    text,
  old_values   jsonb,
  new_values   jsonb,
  created_at   timestamptz not null default now()
);
create index admin_audit_logs_created_idx on public.admin_audit_logs (created_at);
create index admin_audit_logs_admin_idx on public.admin_audit_logs (admin_id, created_at desc);

create table public.pii_access_audit (
  id              bigint generated always as identity primary key,
  accessor_id     uuid,
  subject_user_id uuid,
  table_name      text not null,
  record_id       text,
  fields          text[] not null default '{}',
  purpose         text,
  created_at      timestamptz not null default now()
);
create index pii_access_audit_created_idx on public.pii_access_audit (created_at);
create index pii_access_audit_subject_idx on public.pii_access_audit (subject_user_id, created_at desc);

create table public.function_call_audit (
  id            bigint generated always as identity primary key,
  caller_id     uuid,
  caller_role   text,
  function_name text not null,
  arguments     jsonb not null default '{}'::jsonb,
  outcome       text not null check (outcome in ('ok', 'denied', 'rate_limited', 'error')),
  duration_ms   numeric(12, 3),
  created_at    timestamptz not null default now()
);
create index function_call_audit_created_idx on public.function_call_audit (created_at);

-- Monitoring history.
create table public.system_health_snapshots (
  id            bigint generated always as identity primary key,
  checked_at    timestamptz not null default now(),
  system_status text not null check (system_status in ('healthy', 'warning', 'critical')),
  report        jsonb not null default '{}'::jsonb
);
create index system_health_snapshots_checked_idx on public.system_health_snapshots (checked_at);

create table public.system_alerts (
  id              bigint generated always as identity primary key,
  created_at      timestamptz not null default now(),
  severity        text not null check (severity in ('warning', 'critical', 'recovered')),
  message         text not null,
  report          jsonb,
  acknowledged_at timestamptz
);
create index system_alerts_open_idx on public.system_alerts (created_at) where acknowledged_at is null;

create table public.performance_samples (
  id               bigint generated always as identity primary key,
  sampled_at       timestamptz not null default now(),
  response_time_ms numeric(12, 3) not null,
  error_rate       numeric(7, 6) not null default 0 check (error_rate between 0 and 1),
  details          jsonb not null default '{}'::jsonb
);
create index performance_samples_sampled_idx on public.performance_samples (sampled_at);

-- ==== sql/functions/caller.sql ====
-- Who is calling, as the contract's section 1 defines it.
--   'anon' | 'authenticated' | 'service_role' when PostgREST switched to that role;
--   'authenticated' for any other session carrying JWT claims with a subject;
--   'service_role' for a claims-less superuser or owner of the schema (pg_cron, a DBA);
--   'anon' otherwise.
-- current_setting('role') is the SET ROLE of the request, also inside SECURITY DEFINER.
create function smsao.caller_role() returns text
  language plpgsql stable
  set search_path = ''
as $$
declare
  requested text := pg_catalog.current_setting('role');
  login_role name;
begin
  if requested in ('anon', 'authenticated', 'service_role') then
    return requested;
  end if;
  if nullif(auth.jwt() ->> 'sub', '') is not null then
    return 'authenticated';
  end if;
  login_role := case when requested = 'none' then session_user else requested::name end;
  if exists (select from pg_catalog.pg_roles r where r.rolname = login_role and r.rolsuper)
     or pg_catalog.pg_has_role(login_role,
          (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'smsao'),
          'MEMBER') then
    return 'service_role';
  end if;
  return 'anon';
end
$$;
revoke all on function smsao.caller_role() from public;
grant execute on function smsao.caller_role() to anon, authenticated, service_role;

-- The caller's user id, or NULL when the subject claim is absent or not a uuid.
create function smsao.caller_id() returns uuid
  language plpgsql stable
  set search_path = ''
as $$
begin
  return auth.uid();
exception when invalid_text_representation then
  return null;
end
$$;
revoke all on function smsao.caller_id() from public;
grant execute on function smsao.caller_id() to anon, authenticated, service_role;

-- ==== sql/functions/credit_ledger.sql ====
-- profiles.credits is the running sum of credit_transactions, whoever writes first:
--  * a ledger row moves the balance (apply_credit_transaction);
--  * a trusted writer (service_role, DBA, loader) that sets profiles.credits directly
--    gets the difference recorded as an 'adjustment' ledger row (record_credit_adjustment).
-- A transaction-local marker tells each trigger that the other one is the writer, so
-- the amount is applied once. It counts only inside a nested trigger (depth > 1): any
-- session may set a custom setting, and a marker set by hand before a plain statement
-- would otherwise skip a balance change or its ledger row.
-- App users hold no privilege on credits or the ledger.

create function smsao.apply_credit_transaction() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'profile' then
    return null;  -- the profile row already carries this amount
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'ledger', true);
  update public.profiles set credits = credits + new.amount where user_id = new.user_id;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.apply_credit_transaction() from public;

create function smsao.record_credit_adjustment() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  delta integer := new.credits - case when tg_op = 'UPDATE' then old.credits else 0 end;
begin
  if delta = 0 or (pg_catalog.pg_trigger_depth() > 1
                   and pg_catalog.current_setting('smsao.credit_writer', true) = 'ledger') then
    return null;
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'profile', true);
  insert into public.credit_transactions (user_id, amount, kind)
  values (new.user_id, delta, 'adjustment');
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.record_credit_adjustment() from public;

-- ==== sql/functions/forbid_audit_change.sql ====
-- Audit trails are append-only. App roles hold no UPDATE/DELETE/TRUNCATE privilege on
-- them; this trigger also stops the owner, except for DELETE by the retention cleanup,
-- which runs as the owner and sets smsao.audit_retention for its own transaction.
create function smsao.forbid_audit_change() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  if tg_op = 'DELETE'
     and pg_catalog.current_setting('smsao.audit_retention', true) = 'on'
     and pg_catalog.pg_has_role(current_user,
           (select c.relowner from pg_catalog.pg_class c where c.oid = tg_relid), 'MEMBER') then
    return null;
  end if;
  raise exception '% on %.% is not allowed: audit trails are append-only',
    tg_op, tg_table_schema, tg_table_name
    using errcode = '42501';
end
$$;
revoke all on function smsao.forbid_audit_change() from public;

-- ==== sql/functions/handle_new_user.sql ====
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

-- ==== sql/functions/has_role.sql ====
-- Whether a user holds an application role. SECURITY DEFINER so RLS policies can ask
-- without recursing into user_roles' own policies. False for NULL arguments.
create function public.has_role(user_id uuid, role public.app_role) returns boolean
  language sql stable security definer
  set search_path = ''
as $$
  select exists (
    select from public.user_roles ur
    where ur.user_id = has_role.user_id and ur.role = has_role.role
  )
$$;
revoke all on function public.has_role(uuid, public.app_role) from public;
grant execute on function public.has_role(uuid, public.app_role) to authenticated, service_role;

-- Whether the caller is an admin whose account is active: what RLS policies ask.
create function smsao.is_admin() returns boolean
  language sql stable security definer
  set search_path = ''
as $$
  select exists (
    select from public.user_roles ur
    join public.profiles p on p.user_id = ur.user_id
    where ur.user_id = auth.uid() and ur.role = 'admin' and p.status = 'active'
  )
$$;
revoke all on function smsao.is_admin() from public;
grant execute on function smsao.is_admin() to authenticated, service_role;

-- ==== sql/functions/touch_updated_at.sql ====
create function smsao.touch_updated_at() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;
revoke all on function smsao.touch_updated_at() from public;

-- ==== sql/triggers/audit.sql ====
-- Statement-level, so the guard costs nothing per inserted row.
create trigger admin_audit_logs_append_only
  before update or delete or truncate on public.admin_audit_logs
  for each statement execute function smsao.forbid_audit_change();

create trigger pii_access_audit_append_only
  before update or delete or truncate on public.pii_access_audit
  for each statement execute function smsao.forbid_audit_change();

create trigger function_call_audit_append_only
  before update or delete or truncate on public.function_call_audit
  for each statement execute function smsao.forbid_audit_change();

-- ==== sql/triggers/credits.sql ====
create trigger credit_transactions_apply
  after insert on public.credit_transactions
  for each row execute function smsao.apply_credit_transaction();

create trigger profiles_record_credit_adjustment
  after insert or update of credits on public.profiles
  for each row execute function smsao.record_credit_adjustment();

-- ==== sql/triggers/identity.sql ====
create trigger smsao_on_auth_user_created
  after insert on auth.users
  for each row execute function smsao.handle_new_user();

create trigger profiles_touch_updated_at
  before update on public.profiles
  for each row execute function smsao.touch_updated_at();

-- ==== sql/triggers/updated_at.sql ====
create trigger sms_configurations_touch_updated_at
  before update on public.sms_configurations
  for each row execute function smsao.touch_updated_at();

create trigger contacts_touch_updated_at
  before update on public.contacts
  for each row execute function smsao.touch_updated_at();

create trigger campaigns_touch_updated_at
  before update on public.campaigns
  for each row execute function smsao.touch_updated_at();

-- ==== sql/policies/admin_audit_logs.sql ====
alter table public.admin_audit_logs enable row level security;
revoke all on table public.admin_audit_logs from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.admin_audit_logs to service_role;
grant select on table public.admin_audit_logs to authenticated;

create policy admin_audit_logs_admin_select on public.admin_audit_logs for select to authenticated
  using ((select smsao.is_admin()));

-- ==== sql/policies/campaigns.sql ====
alter table public.campaigns enable row level security;
revoke all on table public.campaigns from anon, authenticated, service_role;
grant select, insert, update, delete on table public.campaigns to service_role;
grant select, insert, update, delete on table public.campaigns to authenticated;

create policy campaigns_select on public.campaigns for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
create policy campaigns_insert_own on public.campaigns for insert to authenticated
  with check (user_id = (select auth.uid()));
create policy campaigns_update_own on public.campaigns for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
create policy campaigns_delete_own on public.campaigns for delete to authenticated
  using (user_id = (select auth.uid()));

-- ==== sql/policies/contact_import_jobs.sql ====
alter table public.contact_import_jobs enable row level security;
revoke all on table public.contact_import_jobs from anon, authenticated, service_role;
grant select, insert, update, delete on table public.contact_import_jobs to service_role;
grant select, insert on table public.contact_import_jobs to authenticated;

create policy contact_import_jobs_select on public.contact_import_jobs for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
-- Users queue their own imports; the backend moves them through their states.
create policy contact_import_jobs_insert_own on public.contact_import_jobs for insert to authenticated
  with check (user_id = (select auth.uid()) and status = 'pending'
              and processed_rows = 0 and completed_at is null);

-- ==== sql/policies/contacts.sql ====
alter table public.contacts enable row level security;
revoke all on table public.contacts from anon, authenticated, service_role;
grant select, insert, update, delete on table public.contacts to service_role;
grant select, insert, update, delete on table public.contacts to authenticated;

-- Contacts are personal data: owner only (admins read them through audited RPCs).
create policy contacts_own on public.contacts for all to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

-- ==== sql/policies/credit_requests.sql ====
alter table public.credit_requests enable row level security;
revoke all on table public.credit_requests from anon, authenticated, service_role;
grant select, insert, update, delete on table public.credit_requests to service_role;
-- Requests are created and processed only through the rate-limited, audited RPCs.
grant select on table public.credit_requests to authenticated;

create policy credit_requests_select on public.credit_requests for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));

-- ==== sql/policies/credit_transactions.sql ====
alter table public.credit_transactions enable row level security;
revoke all on table public.credit_transactions from anon, authenticated, service_role;
-- The ledger is append-only, even for the backend.
grant select, insert on table public.credit_transactions to service_role;
grant select on table public.credit_transactions to authenticated;

create policy credit_transactions_select on public.credit_transactions for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));

-- ==== sql/policies/function_call_audit.sql ====
alter table public.function_call_audit enable row level security;
revoke all on table public.function_call_audit from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.function_call_audit to service_role;
grant select on table public.function_call_audit to authenticated;

create policy function_call_audit_admin_select on public.function_call_audit for select to authenticated
  using ((select smsao.is_admin()));

-- ==== sql/policies/otp_codes.sql ====
alter table public.otp_codes enable row level security;
revoke all on table public.otp_codes from anon, authenticated, service_role;
-- OTPs are issued and checked by the backend only; no policy for app users.
grant select, insert, update, delete on table public.otp_codes to service_role;

-- ==== sql/policies/performance_samples.sql ====
alter table public.performance_samples enable row level security;
revoke all on table public.performance_samples from anon, authenticated, service_role;
grant select, insert, update, delete on table public.performance_samples to service_role;
grant select on table public.performance_samples to authenticated;

create policy performance_samples_admin_select on public.performance_samples for select to authenticated
  using ((select smsao.is_admin()));

-- ==== sql/policies/pii_access_audit.sql ====
alter table public.pii_access_audit enable row level security;
revoke all on table public.pii_access_audit from anon, authenticated, service_role;
-- Append-only: rows are written by SECURITY DEFINER functions and the backend.
grant select, insert on table public.pii_access_audit to service_role;
grant select on table public.pii_access_audit to authenticated;

create policy pii_access_audit_admin_select on public.pii_access_audit for select to authenticated
  using ((select smsao.is_admin()));

-- ==== sql/policies/profiles.sql ====
alter table public.profiles enable row level security;
revoke all on table public.profiles from anon, authenticated, service_role;
grant select, insert, update, delete on table public.profiles to service_role;
grant select on table public.profiles to authenticated;
-- Users edit their own name and phone only: credits, status and email are not theirs to set.
grant update (full_name, phone) on table public.profiles to authenticated;

create policy profiles_select on public.profiles for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
create policy profiles_update_own on public.profiles for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));

-- ==== sql/policies/sms_configurations.sql ====
alter table public.sms_configurations enable row level security;
revoke all on table public.sms_configurations from anon, authenticated, service_role;
grant select, insert, update, delete on table public.sms_configurations to service_role;
grant select, insert, update, delete on table public.sms_configurations to authenticated;

-- Gateways are configured by admins only.
create policy sms_configurations_admin on public.sms_configurations for all to authenticated
  using ((select smsao.is_admin()))
  with check ((select smsao.is_admin()));

-- ==== sql/policies/sms_logs.sql ====
alter table public.sms_logs enable row level security;
revoke all on table public.sms_logs from anon, authenticated, service_role;
-- Logs are written by the sending backend; users only read theirs.
grant select, insert, update, delete on table public.sms_logs to service_role;
grant select on table public.sms_logs to authenticated;

create policy sms_logs_select on public.sms_logs for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));

-- ==== sql/policies/system_alerts.sql ====
alter table public.system_alerts enable row level security;
revoke all on table public.system_alerts from anon, authenticated, service_role;
grant select, insert, update, delete on table public.system_alerts to service_role;
grant select on table public.system_alerts to authenticated;
-- Admins acknowledge alerts; nothing else about an alert changes.
grant update (acknowledged_at) on table public.system_alerts to authenticated;

create policy system_alerts_admin_select on public.system_alerts for select to authenticated
  using ((select smsao.is_admin()));
create policy system_alerts_admin_ack on public.system_alerts for update to authenticated
  using ((select smsao.is_admin()))
  with check ((select smsao.is_admin()));

-- ==== sql/policies/system_health_snapshots.sql ====
alter table public.system_health_snapshots enable row level security;
revoke all on table public.system_health_snapshots from anon, authenticated, service_role;
grant select, insert, update, delete on table public.system_health_snapshots to service_role;
grant select on table public.system_health_snapshots to authenticated;

create policy system_health_snapshots_admin_select on public.system_health_snapshots for select to authenticated
  using ((select smsao.is_admin()));

-- ==== sql/policies/user_roles.sql ====
alter table public.user_roles enable row level security;
revoke all on table public.user_roles from anon, authenticated, service_role;
grant select, insert, update, delete on table public.user_roles to service_role;
grant select on table public.user_roles to authenticated;

-- Roles are granted by the backend only; users see their own, admins all.
create policy user_roles_select on public.user_roles for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
