-- The analytics rollups (tables in sql/schema/70_analytics.sql), kept by the statement
-- triggers of sql/functions/analytics_triggers.sql.
--
-- Advisory lock keys (two-int form): (7411240, 0) one refresh of smsao.business_months at a time.

-- The month (UTC) of a time, named by its first day.
create or replace function smsao.utc_month(ts timestamptz) returns date
  language sql immutable parallel safe
  set search_path = ''
as $$
  select pg_catalog.date_trunc('month', ts, 'UTC')::date
$$;
revoke all on function smsao.utc_month(timestamptz) from public, anon, authenticated, service_role;

-- The first instant (UTC) of a month named by its first day.
create or replace function smsao.month_start(month date) returns timestamptz
  language sql immutable parallel safe
  set search_path = ''
as $$
  select month::timestamp at time zone 'UTC'
$$;
revoke all on function smsao.month_start(date) from public, anon, authenticated, service_role;

-- Add events per (name, day), one statement for all of them, to this backend's shard.
-- Keys in order, so two writers that share a shard lock their rows in the same order.
create or replace function smsao.bump_event_counts(names text[], days date[], deltas bigint[]) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  insert into smsao.event_counts as c (event_name, day, shard, events)
  select d.name, d.day, (pg_catalog.pg_backend_pid() % 8)::smallint, pg_catalog.sum(d.delta)
  from unnest(names, days, deltas) d(name, day, delta)
  group by d.name, d.day
  having pg_catalog.sum(d.delta) <> 0
  order by d.name, d.day
  on conflict on constraint event_counts_pkey do update set events = c.events + excluded.events;
end
$$;
revoke all on function smsao.bump_event_counts(text[], date[], bigint[]) from public, anon, authenticated, service_role;

-- The pseudonymous id of a user in the GA4 export: a keyed SHA-256 of the user id (the
-- key is smsao.ga4_settings', owner-only). Without the key a pseudonym cannot be linked
-- back to an id by hashing candidate ids.
create or replace function smsao.ga4_pseudonym(user_id uuid) returns text
  language plpgsql stable
  set search_path = ''
as $$
declare
  key bytea;
begin
  select s.pseudonym_key into strict key from smsao.ga4_settings s;
  return pg_catalog.encode(pg_catalog.sha256(key || pg_catalog.uuid_send(user_id)), 'hex');
end
$$;
revoke all on function smsao.ga4_pseudonym(uuid) from public, anon, authenticated, service_role;

-- Queue events for the GA4 export when an admin opted their name in; one statement.
create or replace function smsao.queue_ga4(name text, user_ids uuid[], times timestamptz[], params jsonb[])
  returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if not exists (select from smsao.ga4_export_events g where g.event_name = name) then
    return;
  end if;
  insert into smsao.ga4_outbox (client_id, event_name, params, occurred_at)
  select smsao.ga4_pseudonym(e.user_id), name, coalesce(e.params, '{}'::jsonb), e.at
  from unnest(user_ids, times, params) e(user_id, at, params)
  order by e.at;
end
$$;
revoke all on function smsao.queue_ga4(text, uuid[], timestamptz[], jsonb[]) from public, anon, authenticated, service_role;

-- Record that users reached a milestone at the given times (one entry per user). Keeps
-- each user's earliest time, moves the day counts with it, and queues the first time for
-- GA4. The anti-join skips users already there earlier (the common case: a user's next
-- SMS); the upsert settles concurrent writers, and its RETURNING says what changed.
create or replace function smsao.record_milestones(milestone text, user_ids uuid[], times timestamptz[])
  returns void
  language plpgsql
  set search_path = ''
as $$
declare
  days         date[];
  deltas       bigint[];
  firsts_users uuid[];
  firsts_times timestamptz[];
begin
  if coalesce(cardinality(user_ids), 0) = 0 then
    return;
  end if;
  with candidates as (
    select c.user_id, c.at from unnest(user_ids, times) c(user_id, at)
    where not exists (select from smsao.user_milestones m
                      where m.user_id = c.user_id and m.milestone = record_milestones.milestone
                        and m.first_at <= c.at)
  ), changed as (
    insert into smsao.user_milestones as m (user_id, milestone, first_at)
    select c.user_id, record_milestones.milestone, c.at from candidates c
    order by c.user_id
    on conflict on constraint user_milestones_pkey do update
      set first_at = excluded.first_at, previous_first_at = m.first_at
      where excluded.first_at < m.first_at
    returning m.user_id, m.first_at, m.previous_first_at
  ), moves as (
    select d.day, pg_catalog.sum(d.delta)::bigint as delta
    from (select (c.first_at at time zone 'UTC')::date as day, 1 as delta from changed c
          union all
          select (c.previous_first_at at time zone 'UTC')::date, -1 from changed c
          where c.previous_first_at is not null) d
    group by d.day
  )
  select (select pg_catalog.array_agg(v.day) from moves v),
         (select pg_catalog.array_agg(v.delta) from moves v),
         (select pg_catalog.array_agg(c.user_id) from changed c where c.previous_first_at is null),
         (select pg_catalog.array_agg(c.first_at) from changed c where c.previous_first_at is null)
    into days, deltas, firsts_users, firsts_times;

  if days is not null then
    perform smsao.bump_event_counts(pg_catalog.array_fill(milestone, array[cardinality(days)]), days, deltas);
  end if;
  if firsts_users is not null then
    perform smsao.queue_ga4(milestone, firsts_users, firsts_times,
                            pg_catalog.array_fill(null::jsonb, array[cardinality(firsts_users)]));
  end if;
end
$$;
revoke all on function smsao.record_milestones(text, uuid[], timestamptz[]) from public, anon, authenticated, service_role;

-- The day (UTC) of a time.
create or replace function smsao.utc_day(ts timestamptz) returns date
  language sql immutable parallel safe
  set search_path = ''
as $$
  select (ts at time zone 'UTC')::date
$$;
revoke all on function smsao.utc_day(timestamptz) from public, anon, authenticated, service_role;

-- Mark months whose revenue or customer figures a statement changed.
create or replace function smsao.mark_business_months(months date[]) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  insert into smsao.business_month_marks (month)
  select distinct m from unnest(months) m where m is not null;
end
$$;
revoke all on function smsao.mark_business_months(date[]) from public, anon, authenticated, service_role;

-- The figures of months from_month .. to_month counted from the base tables (section 7's
-- definitions); the rollup's refresh and nothing else uses it (the tests and `integrity`
-- hold their own, independent recounts).
create or replace function smsao.count_business_months(from_month date, to_month date)
  returns setof smsao.business_months
  language plpgsql stable
  set search_path = ''
as $$
begin
  return query
  with prices as (
    -- Each price with the time it stopped being in force: a range join, not a lookup per row.
    select p.valid_from, pg_catalog.lead(p.valid_from, 1, 'infinity') over (order by p.valid_from) as valid_until,
           p.price_per_credit
    from public.credit_prices p
  ), purchases as (
    select r.user_id, pg_catalog.date_trunc('month', r.processed_at, 'UTC')::date as month,
           pg_catalog.round(r.amount * coalesce(pr.price_per_credit, 0), 2) as revenue
    from public.credit_requests r
    left join prices pr on r.processed_at >= pr.valid_from and r.processed_at < pr.valid_until
    where r.status = 'approved'
      and r.processed_at >= smsao.month_start((from_month - interval '1 month')::date)
      and r.processed_at < smsao.month_start((to_month + interval '1 month')::date)
  ), refunds as (
    select pg_catalog.date_trunc('month', t.created_at, 'UTC')::date as month,
           pg_catalog.sum(-pg_catalog.round(pg_catalog.abs(t.amount) * coalesce(pr.price_per_credit, 0), 2)) as revenue
    from public.credit_transactions t
    left join prices pr on t.created_at >= pr.valid_from and t.created_at < pr.valid_until
    where t.kind = 'refund' and t.created_at >= smsao.month_start(from_month)
      and t.created_at < smsao.month_start((to_month + interval '1 month')::date)
    group by 1
  ), buyers as (
    select p.user_id, p.month, pg_catalog.sum(p.revenue) as revenue
    from purchases p group by p.user_id, p.month
  ), per_buyer as (
    -- Neighbouring months by window, not by joining the CTE to itself (a CTE has no
    -- statistics: the planner may nest-loop it, once per buyer).
    select b.month, b.user_id, b.revenue,
           pg_catalog.lag(b.month) over w = (b.month - interval '1 month')::date as repeat,
           not exists (select from public.credit_requests r
                       where r.user_id = b.user_id and r.status = 'approved'
                         and r.processed_at < (b.month::timestamp at time zone 'UTC')) as first_month,
           pg_catalog.lead(b.month) over w is distinct from (b.month + interval '1 month')::date as churns_next
    from buyers b
    window w as (partition by b.user_id order by b.month)
  ), months as (
    select g::date as month
    from pg_catalog.generate_series(from_month::timestamp, to_month::timestamp, interval '1 month') g
  ), per_month as (
    select b.month, pg_catalog.sum(b.revenue) as revenue,
           pg_catalog.sum(b.revenue) filter (where b.repeat) as mrr,
           pg_catalog.count(*) as paying,
           pg_catalog.count(*) filter (where b.first_month) as new_paying,
           pg_catalog.count(*) filter (where b.churns_next) as churning
    from per_buyer b group by b.month
  )
  select m.month,
         (coalesce(p.revenue, 0) + coalesce(f.revenue, 0))::numeric(16, 2),
         coalesce(p.mrr, 0)::numeric(16, 2),
         coalesce(p.paying, 0),
         coalesce(p.new_paying, 0),
         coalesce(q.churning, 0)
  from months m
  left join per_month p on p.month = m.month
  left join refunds f on f.month = m.month
  left join per_month q on q.month = (m.month - interval '1 month')::date
  order by m.month;
end
$$;
revoke all on function smsao.count_business_months(date, date) from public, anon, authenticated, service_role;

-- Bring smsao.business_months up to date: recount every month from the earliest marked
-- one to the latest with data (a purchase in month M changes M+1's churn and MRR, and an
-- earlier first purchase moves a later month's new customers). Writes in the current month
-- mark only it. The marks are deleted first and the recount reads a newer snapshot, so a
-- write whose mark this refresh removed is always in the recount.
create or replace function smsao.refresh_business_months() returns void
  language plpgsql
  set search_path = ''
as $$
declare
  from_month date;
  first_data date;
  last_data date;
begin
  if not exists (select from smsao.business_month_marks) then
    return;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(7411240, 0);
  with seen as (delete from smsao.business_month_marks returning month)
  select pg_catalog.min(s.month) into from_month from seen s;
  if from_month is null then
    return;   -- another refresh took them
  end if;
  select smsao.utc_month(least(
           (select pg_catalog.min(r.processed_at) from public.credit_requests r where r.status = 'approved'),
           (select pg_catalog.min(t.created_at) from public.credit_transactions t where t.kind = 'refund'))),
         smsao.utc_month(greatest(
           (select pg_catalog.max(r.processed_at) from public.credit_requests r where r.status = 'approved'),
           (select pg_catalog.max(t.created_at) from public.credit_transactions t where t.kind = 'refund')))
    into first_data, last_data;
  if first_data is null then
    delete from smsao.business_months;   -- no purchase and no refund left
    return;
  end if;
  from_month := greatest(from_month, first_data);
  delete from smsao.business_months b where b.month >= from_month or b.month < first_data;
  -- The month after the last purchase holds that purchase's churn.
  insert into smsao.business_months
  select * from smsao.count_business_months(from_month, (last_data + interval '1 month')::date);
end
$$;
revoke all on function smsao.refresh_business_months() from public, anon, authenticated, service_role;
