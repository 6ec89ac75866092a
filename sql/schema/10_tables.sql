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
