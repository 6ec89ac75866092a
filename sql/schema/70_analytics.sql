-- Business analytics (CONTRACT section 7, issue 18).
--
-- Base tables an admin maintains (prices, acquisition spend), the custom events, and the
-- rollups the readers answer from:
--   smsao.user_milestones     each user's first time per milestone (signed_up is
--                             profiles.created_at itself), kept by statement
--                             triggers in the writing transaction (sql/triggers/analytics.sql)
--   smsao.event_counts        events per UTC day and name (milestones count on the day a user
--                             first reached them), sharded deltas like smsao.health_counters
--   smsao.business_months     revenue and customer figures per month, recounted for the
--                             months that the writes marked in smsao.business_month_marks
--                             (same transaction) by the first reader after them: never stale
--   smsao.ga4_outbox          events an admin opted in to, queued for the GA4 export
-- Access (RLS, grants) is in sql/policies/<table>.sql.

-- Revenue takes the price in force when a purchase is approved (or a refund is written):
-- the row with the latest valid_from <= that time.
create table public.credit_prices (
  id               bigint generated always as identity primary key,
  valid_from       timestamptz not null unique,
  price_per_credit numeric(12, 4) not null check (price_per_credit >= 0),
  currency         text not null default 'AOA' check (currency ~ '^[A-Z]{3}$'),
  created_at       timestamptz not null default now()
);

create table public.acquisition_spend (
  id         bigint generated always as identity primary key,
  month      date not null check (month = date_trunc('month', month)::date),
  channel    text not null check (channel ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
  amount     numeric(14, 2) not null check (amount >= 0),
  currency   text not null default 'AOA' check (currency ~ '^[A-Z]{3}$'),
  created_at timestamptz not null default now(),
  unique (month, channel)
);

-- Custom events (public.track_event). No foreign key: like sms_logs, an event is history
-- and outlives the account. The name rules are track_event's, held here too so that a
-- trusted loader cannot store what the function would refuse.
create table public.business_events (
  id          bigint generated always as identity primary key,
  user_id     uuid not null,
  event_name  text not null check (event_name ~ '^[a-z][a-z0-9_]{1,62}$' and event_name not in
                ('signed_up', 'requested_credits', 'purchased_credits', 'sent_sms',
                 'created_campaign', 'imported_contacts')),
  properties  jsonb not null default '{}'::jsonb
              check (jsonb_typeof(properties) = 'object' and octet_length(properties::text) <= 4096),
  occurred_at timestamptz not null default now()
);
-- Funnel steps: first occurrence per user in a range, and a user's next occurrence.
create index business_events_name_time_idx on public.business_events (event_name, occurred_at);
create index business_events_user_idx on public.business_events (user_id, event_name, occurred_at);

create table smsao.milestones (
  name   text primary key,
  source text not null
);
insert into smsao.milestones (name, source) values
  ('signed_up', 'profiles.created_at (read there, not stored in user_milestones)'),
  ('requested_credits', 'credit_requests.created_at'),
  ('purchased_credits', 'credit_requests.processed_at, status approved'),
  ('sent_sms', 'sms_logs.created_at'),
  ('created_campaign', 'campaigns.created_at'),
  ('imported_contacts', 'contact_import_jobs.completed_at, status completed');

-- A milestone, once reached, stays reached: deleting the row that reached it (the retention
-- cleanup deletes old import jobs) does not undo the user's history. previous_first_at is
-- the time an earlier-dated write replaced (a backfill), so the day counts move with it.
create table smsao.user_milestones (
  user_id           uuid not null,
  -- Checked by a list, not a foreign key: a foreign key check is a query per inserted row.
  milestone         text not null check (milestone in ('requested_credits', 'purchased_credits', 'sent_sms',
                                                       'created_campaign', 'imported_contacts')),
  first_at          timestamptz not null,
  previous_first_at timestamptz,
  primary key (user_id, milestone)
);
create index user_milestones_time_idx on smsao.user_milestones (milestone, first_at);

-- Events per UTC day and name: value of (event_name, day) = sum(events) over its shards. A
-- statement adds its deltas in one upsert to the shard of its backend (pid % 8), so
-- concurrent writers of today's counts rarely wait on each other, and a key has at most 8
-- rows (smsao.bump_event_counts).
create table smsao.event_counts (
  event_name text not null,
  day        date not null,
  shard      smallint not null check (shard between 0 and 7),
  events     bigint not null default 0,
  primary key (event_name, day, shard)
) with (fillfactor = 70);  -- room on the page for HOT updates of `events`

-- Months whose figures a write changed: one row per statement and month, never upserted
-- (an upsert that finds a committed mark would do nothing, and a refresh deleting that mark
-- could then miss this writer's rows). The refresh deletes the marks it sees, then recounts.
create table smsao.business_month_marks (
  id    bigint generated always as identity primary key,
  month date not null
);

create table smsao.business_months (
  month                date primary key,
  revenue              numeric(16, 2) not null,
  mrr                  numeric(16, 2) not null,
  paying_customers     bigint not null,
  new_paying_customers bigint not null,
  churned_customers    bigint not null
);

-- The month recounts read approved requests by time and by user, and refunds by time.
create index credit_requests_approved_at_idx on public.credit_requests (processed_at)
  where status = 'approved';
create index credit_requests_approved_user_idx on public.credit_requests (user_id, processed_at)
  where status = 'approved';
create index credit_transactions_refund_at_idx on public.credit_transactions (created_at)
  where kind = 'refund';

-- GA4 export. The key of the pseudonyms: one random key per database, owner-only.
create table smsao.ga4_settings (
  singleton     boolean primary key default true check (singleton),
  pseudonym_key bytea not null default (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))
);
insert into smsao.ga4_settings default values;

create table smsao.ga4_export_events (
  event_name text primary key check (event_name ~ '^[a-z][a-z0-9_]{1,62}$'),
  enabled_by uuid,
  enabled_at timestamptz not null default now()
);

-- Queued in the writing transaction; sent_at is set only after the endpoint answered 2xx.
-- client_id is the keyed hash of the user id: the id itself is never stored here.
create table smsao.ga4_outbox (
  id          bigint generated always as identity primary key,
  client_id   text not null,
  event_name  text not null,
  params      jsonb not null default '{}'::jsonb,
  occurred_at timestamptz not null,
  queued_at   timestamptz not null default now(),
  sent_at     timestamptz
);
create index ga4_outbox_unsent_idx on smsao.ga4_outbox (client_id, id) where sent_at is null;

insert into smsao.operation_limits (operation_type, max_attempts, window_minutes)
values ('analytics_event', 120, 1);
