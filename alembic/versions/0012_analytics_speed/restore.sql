-- Written by scripts/freeze_sql.py --restore for revision 0012_analytics_speed. Do not edit.

-- ==== sql/functions/analytics_api.sql (as frozen by 0010_analytics) ====
-- The analytics API (CONTRACT section 7): custom events, and the three readers, which are
-- for admins and service_role, rate limited as admin_access and audited in
-- admin_audit_logs like every admin action (arguments only: they return aggregates).

-- Whether a name is one of the built-in milestones.
create or replace function smsao.is_milestone(name text) returns boolean
  language plpgsql stable
  set search_path = ''
as $$
begin
  return exists (select from smsao.milestones m where m.name = is_milestone.name);
end
$$;
revoke all on function smsao.is_milestone(text) from public, anon, authenticated, service_role;

-- Whether some event properties carry personal data, by key (contact details, names,
-- secrets) or by value (an e-mail address or a phone number): events must not.
create or replace function smsao.carries_personal_data(properties jsonb) returns boolean
  language plpgsql immutable
  set search_path = ''
as $$
begin
  return exists (
    select from pg_catalog.jsonb_each(properties) p
    where p.key ~* '(e_?mail|phone|msisdn|full_?name|first_?name|last_?name|address|password|secret|token)'
       or (pg_catalog.jsonb_typeof(p.value) = 'string'
           and ((p.value #>> '{}') ~ '[^@[:space:]]+@[^@[:space:]]+\.[a-zA-Z]{2,}'
                or (p.value #>> '{}') ~ '^\+?[0-9][0-9 ().-]{6,18}[0-9]$')));
end
$$;
revoke all on function smsao.carries_personal_data(jsonb) from public, anon, authenticated, service_role;

-- A custom event of the calling user. Arguments first (a malformed call writes nothing,
-- not even a rate-limit attempt), then the session and the analytics_event rate limit.
create or replace function public.track_event(event_name text, properties jsonb default '{}'::jsonb)
  returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  args jsonb := pg_catalog.jsonb_build_object('event_name', event_name);
  uid  uuid := smsao.caller_id();
begin
  if event_name is null or event_name !~ '^[a-z][a-z0-9_]{1,62}$' then
    raise exception 'event_name must match ^[a-z][a-z0-9_]{1,62}$, got %',
      coalesce(pg_catalog.quote_literal(event_name), 'NULL') using errcode = '22023';
  end if;
  if smsao.is_milestone(event_name) then
    raise exception 'event_name: % is a built-in milestone, recorded by the database from the product''s own writes',
      event_name using errcode = '22023';
  end if;
  if properties is null or pg_catalog.jsonb_typeof(properties) <> 'object' then
    raise exception 'properties must be a JSON object, got %', coalesce(pg_catalog.jsonb_typeof(properties), 'NULL')
      using errcode = '22023';
  end if;
  if pg_catalog.octet_length(properties::text) > 4096 then
    raise exception 'properties must be at most 4096 bytes of JSON, got %', pg_catalog.octet_length(properties::text)
      using errcode = '22023';
  end if;
  if smsao.carries_personal_data(properties) then
    raise exception 'properties must not carry personal data (e-mail, phone, names, secrets)'
      using errcode = '22023';
  end if;
  if uid is null then
    perform smsao.refuse('track_event', args, 'denied', '42501',
      'track_event is for signed-in users: call it with a user''s token');
  end if;
  perform smsao.guard_critical('track_event', 'analytics_event', args);
  insert into public.business_events (user_id, event_name, properties)
  values (uid, track_event.event_name, track_event.properties);
end
$$;
revoke all on function public.track_event(text, jsonb) from public, anon, authenticated, service_role;
grant execute on function public.track_event(text, jsonb) to authenticated;

-- The gate of the readers: the admin gate (session, admin_access rate limit, admin or
-- service_role), then one admin_audit_logs row for the read.
create or replace function smsao.guard_analytics_read(function_name text, arguments jsonb) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.guard_admin(function_name, arguments);
  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), function_name, 'analytics', null, null, arguments);
end
$$;
revoke all on function smsao.guard_analytics_read(text, jsonb) from public, anon, authenticated, service_role;

-- A month argument: the first day of a month, not NULL.
create or replace function smsao.check_month_argument(name text, value date) returns void
  language plpgsql immutable
  set search_path = ''
as $$
begin
  if value is null or value <> pg_catalog.date_trunc('month', value)::date or not pg_catalog.isfinite(value) then
    raise exception '% must be the first day of a month, got %', name, coalesce(value::text, 'NULL')
      using errcode = '22023';
  end if;
end
$$;
revoke all on function smsao.check_month_argument(text, date) from public, anon, authenticated, service_role;

create or replace function smsao.check_month_range(from_month date, to_month date) returns void
  language plpgsql immutable
  set search_path = ''
as $$
begin
  perform smsao.check_month_argument('from_month', from_month);
  perform smsao.check_month_argument('to_month', to_month);
  if to_month < from_month then
    raise exception 'to_month (%) must not be before from_month (%)', to_month, from_month using errcode = '22023';
  end if;
  if to_month > (from_month + interval '119 months')::date then
    raise exception 'to_month: at most 120 months from from_month, got % .. %', from_month, to_month
      using errcode = '22023';
  end if;
end
$$;
revoke all on function smsao.check_month_range(date, date) from public, anon, authenticated, service_role;

-- The monthly figures, fresh: the months marked since the last refresh are recounted
-- first. A read-only transaction (a standby) cannot refresh: it recounts from the base
-- tables instead, so the answer is the same, only slower.
create or replace function smsao.fresh_business_months() returns setof smsao.business_months
  language plpgsql
  set search_path = ''
as $$
declare
  first_data date;
  last_data date;
begin
  if pg_catalog.current_setting('transaction_read_only') = 'off' then
    perform smsao.refresh_business_months();
    return query select * from smsao.business_months;
    return;
  end if;
  if not exists (select from smsao.business_month_marks) then
    return query select * from smsao.business_months;
    return;
  end if;
  select smsao.utc_month(least(
           (select pg_catalog.min(r.processed_at) from public.credit_requests r where r.status = 'approved'),
           (select pg_catalog.min(t.created_at) from public.credit_transactions t where t.kind = 'refund'))),
         smsao.utc_month(greatest(
           (select pg_catalog.max(r.processed_at) from public.credit_requests r where r.status = 'approved'),
           (select pg_catalog.max(t.created_at) from public.credit_transactions t where t.kind = 'refund')))
    into first_data, last_data;
  if first_data is not null then
    return query select * from smsao.count_business_months(first_data, (last_data + interval '1 month')::date);
  end if;
end
$$;
revoke all on function smsao.fresh_business_months() from public, anon, authenticated, service_role;

create or replace function public.business_metrics(from_month date, to_month date)
  returns table (month date, revenue numeric, mrr numeric, paying_customers bigint,
                 new_paying_customers bigint, churned_customers bigint, arppu numeric,
                 cac numeric, ltv numeric, acquisition_spend numeric)
  language plpgsql security definer
  set search_path = ''
as $$
#variable_conflict use_column
declare
  args jsonb := pg_catalog.jsonb_build_object('from_month', from_month, 'to_month', to_month);
begin
  perform smsao.check_month_range(from_month, to_month);
  perform smsao.guard_analytics_read('business_metrics', args);
  return query
  with stored as (
    select * from smsao.fresh_business_months()
  ), earlier as (
    -- LTV counts every month up to M, also those before the range.
    select coalesce(pg_catalog.sum(s.revenue), 0) as revenue,
           coalesce(pg_catalog.sum(s.new_paying_customers), 0) as buyers
    from stored s where s.month < business_metrics.from_month
  ), spend as (
    select a.month, pg_catalog.sum(a.amount) as amount from public.acquisition_spend a
    where a.month between business_metrics.from_month and business_metrics.to_month group by a.month
  ), months as (
    select g::date as month,
           coalesce(s.revenue, 0) as revenue, coalesce(s.mrr, 0) as mrr,
           coalesce(s.paying_customers, 0) as paying, coalesce(s.new_paying_customers, 0) as new_paying,
           coalesce(s.churned_customers, 0) as churned, coalesce(sp.amount, 0) as spend
    from pg_catalog.generate_series(business_metrics.from_month::timestamp, business_metrics.to_month::timestamp,
                                    interval '1 month') g
    left join stored s on s.month = g::date
    left join spend sp on sp.month = g::date
  )
  select m.month, m.revenue, m.mrr, m.paying, m.new_paying, m.churned,
         pg_catalog.round(m.revenue / nullif(m.paying, 0), 2),
         pg_catalog.round(m.spend / nullif(m.new_paying, 0), 2),
         pg_catalog.round((e.revenue + pg_catalog.sum(m.revenue) over w)
                          / nullif(e.buyers + pg_catalog.sum(m.new_paying) over w, 0), 2),
         m.spend
  from months m cross join earlier e
  window w as (order by m.month)
  order by m.month;
end
$$;
revoke all on function public.business_metrics(date, date) from public, anon, authenticated, service_role;
grant execute on function public.business_metrics(date, date) to authenticated, service_role;

-- Who reached a step, and when: step 1 from its time range, later steps from the users
-- who reached the previous one (see conversion_funnel).
create or replace function smsao.funnel_first_step(step text, since timestamptz, until timestamptz,
                                                   out user_ids uuid[], out times timestamptz[])
  language plpgsql stable
  set search_path = ''
as $$
begin
  if step = 'signed_up' then
    select pg_catalog.array_agg(p.user_id), pg_catalog.array_agg(p.created_at) into user_ids, times
    from public.profiles p where p.created_at >= since and p.created_at < until;
  elsif smsao.is_milestone(step) then
    select pg_catalog.array_agg(m.user_id), pg_catalog.array_agg(m.first_at) into user_ids, times
    from smsao.user_milestones m
    where m.milestone = step and m.first_at >= since and m.first_at < until;
  else
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.at) into user_ids, times
    from (select e.user_id, pg_catalog.min(e.occurred_at) as at from public.business_events e
          where e.event_name = step and e.occurred_at >= since and e.occurred_at < until
          group by e.user_id) g;
  end if;
end
$$;
revoke all on function smsao.funnel_first_step(text, timestamptz, timestamptz) from public, anon, authenticated, service_role;

create or replace function smsao.funnel_next_step(step text, user_ids uuid[], times timestamptz[],
                                                  starts timestamptz[], within interval,
                                                  out next_users uuid[], out next_times timestamptz[],
                                                  out next_starts timestamptz[])
  language plpgsql stable
  set search_path = ''
as $$
begin
  if step = 'signed_up' then
    select pg_catalog.array_agg(s.user_id), pg_catalog.array_agg(p.created_at), pg_catalog.array_agg(s.started)
      into next_users, next_times, next_starts
    from unnest(user_ids, times, starts) s(user_id, at, started)
    join public.profiles p on p.user_id = s.user_id
    where p.created_at >= s.at and p.created_at <= s.started + within;
  elsif smsao.is_milestone(step) then
    select pg_catalog.array_agg(s.user_id), pg_catalog.array_agg(m.first_at), pg_catalog.array_agg(s.started)
      into next_users, next_times, next_starts
    from unnest(user_ids, times, starts) s(user_id, at, started)
    join smsao.user_milestones m on m.user_id = s.user_id and m.milestone = step
    where m.first_at >= s.at and m.first_at <= s.started + within;
  else
    select pg_catalog.array_agg(s.user_id), pg_catalog.array_agg(x.at), pg_catalog.array_agg(s.started)
      into next_users, next_times, next_starts
    from unnest(user_ids, times, starts) s(user_id, at, started)
    cross join lateral (select pg_catalog.min(e.occurred_at) as at from public.business_events e
                        where e.user_id = s.user_id and e.event_name = step
                          and e.occurred_at >= s.at and e.occurred_at <= s.started + within) x
    where x.at is not null;
  end if;
end
$$;
revoke all on function smsao.funnel_next_step(text, uuid[], timestamptz[], timestamptz[], interval)
  from public, anon, authenticated, service_role;

create or replace function public.conversion_funnel(steps text[], since timestamptz, until timestamptz,
                                                    within interval default '30 days')
  returns table (step integer, event_name text, users bigint,
                 conversion_from_first numeric, conversion_from_previous numeric)
  language plpgsql security definer
  set search_path = ''
as $$
declare
  args jsonb := pg_catalog.jsonb_build_object('steps', steps, 'since', since, 'until', until, 'within', within);
  user_ids uuid[];
  times timestamptz[];
  starts timestamptz[];
  counts bigint[];
begin
  if steps is null or coalesce(cardinality(steps), 0) not between 2 and 10 or pg_catalog.array_ndims(steps) <> 1 then
    raise exception 'steps must be an array of 2 to 10 event names, got %', coalesce(steps::text, 'NULL')
      using errcode = '22023';
  end if;
  for i in 1 .. cardinality(steps) loop
    if steps[i] is null or steps[i] !~ '^[a-z][a-z0-9_]{1,62}$' then
      raise exception 'steps[%] must be an event name matching ^[a-z][a-z0-9_]{1,62}$, got %',
        i, coalesce(pg_catalog.quote_literal(steps[i]), 'NULL') using errcode = '22023';
    end if;
  end loop;
  if since is null or not pg_catalog.isfinite(since) then
    raise exception 'since must be a finite time, got %', coalesce(since::text, 'NULL') using errcode = '22023';
  end if;
  if until is null or not pg_catalog.isfinite(until) or until <= since then
    raise exception 'until must be a finite time after since, got %', coalesce(until::text, 'NULL')
      using errcode = '22023';
  end if;
  if within is null or within <= interval '0' or within > interval '3650 days' then
    raise exception 'within must be a positive interval of at most 3650 days, got %', coalesce(within::text, 'NULL')
      using errcode = '22023';
  end if;
  perform smsao.guard_analytics_read('conversion_funnel', args);

  select f.user_ids, f.times into user_ids, times from smsao.funnel_first_step(steps[1], since, until) f;
  starts := times;
  counts := array[coalesce(cardinality(user_ids), 0)::bigint];
  for i in 2 .. cardinality(steps) loop
    if coalesce(cardinality(user_ids), 0) > 0 then
      select n.next_users, n.next_times, n.next_starts into user_ids, times, starts
      from smsao.funnel_next_step(steps[i], user_ids, times, starts, within) n;
    end if;
    counts := counts || coalesce(cardinality(user_ids), 0)::bigint;
  end loop;

  return query
  select i, steps[i], counts[i],
         pg_catalog.round(counts[i]::numeric / nullif(counts[1], 0), 4),
         pg_catalog.round(counts[i]::numeric / nullif(counts[greatest(i - 1, 1)], 0), 4)
  from pg_catalog.generate_series(1, cardinality(steps)) i;
end
$$;
revoke all on function public.conversion_funnel(text[], timestamptz, timestamptz, interval)
  from public, anon, authenticated, service_role;
grant execute on function public.conversion_funnel(text[], timestamptz, timestamptz, interval)
  to authenticated, service_role;

create or replace function public.retention_cohorts(from_month date, to_month date)
  returns table (cohort_month date, months_since integer, cohort_size bigint, active_users bigint)
  language plpgsql security definer
  set search_path = ''
as $$
#variable_conflict use_column
declare
  args jsonb := pg_catalog.jsonb_build_object('from_month', from_month, 'to_month', to_month);
begin
  perform smsao.check_month_range(from_month, to_month);
  perform smsao.guard_analytics_read('retention_cohorts', args);
  return query
  with members as (
    select pg_catalog.date_trunc('month', p.created_at, 'UTC')::date as cohort, p.user_id
    from public.profiles p
    where p.created_at >= smsao.month_start(retention_cohorts.from_month)
      and p.created_at < smsao.month_start((retention_cohorts.to_month + interval '1 month')::date)
  ), grid as (
    -- Each (cohort, k) with the bounds of month cohort + k, computed once per cell.
    select c::date as cohort, k::integer as k,
           (c + pg_catalog.make_interval(months => k)) at time zone 'UTC' as lo,
           (c + pg_catalog.make_interval(months => k + 1)) at time zone 'UTC' as hi
    from pg_catalog.generate_series(retention_cohorts.from_month::timestamp, retention_cohorts.to_month::timestamp,
                                    interval '1 month') c
    cross join lateral pg_catalog.generate_series(0,
      ((pg_catalog.date_part('year', retention_cohorts.to_month) - pg_catalog.date_part('year', c)) * 12
       + pg_catalog.date_part('month', retention_cohorts.to_month) - pg_catalog.date_part('month', c))::integer) k
  ), active as (
    select g.cohort, g.k, pg_catalog.count(*) as users
    from grid g join members u on u.cohort = g.cohort
    where exists (select from public.sms_logs s
                  where s.user_id = u.user_id and s.created_at >= g.lo and s.created_at < g.hi)
    group by g.cohort, g.k
  )
  select g.cohort, g.k,
         (select pg_catalog.count(*) from members u where u.cohort = g.cohort),
         coalesce(a.users, 0)
  from grid g left join active a on a.cohort = g.cohort and a.k = g.k
  order by g.cohort, g.k;
end
$$;
revoke all on function public.retention_cohorts(date, date) from public, anon, authenticated, service_role;
grant execute on function public.retention_cohorts(date, date) to authenticated, service_role;

-- Opt an event name in to (or out of) the GA4 export: from then on its events are queued
-- in the transaction that writes them. Admins and service_role; audited.
create or replace function public.set_ga4_export(event_name text, enabled boolean) returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  args jsonb := pg_catalog.jsonb_build_object('event_name', event_name, 'enabled', enabled);
  was  boolean;
begin
  if event_name is null or event_name !~ '^[a-z][a-z0-9_]{1,62}$' then
    raise exception 'event_name must match ^[a-z][a-z0-9_]{1,62}$, got %',
      coalesce(pg_catalog.quote_literal(event_name), 'NULL') using errcode = '22023';
  end if;
  if enabled is null then
    raise exception 'enabled must be true or false, not NULL' using errcode = '22023';
  end if;
  perform smsao.guard_admin('set_ga4_export', args);
  was := exists (select from smsao.ga4_export_events g where g.event_name = set_ga4_export.event_name);
  if enabled then
    insert into smsao.ga4_export_events (event_name, enabled_by) values (set_ga4_export.event_name, smsao.caller_id())
    on conflict do nothing;
  else
    delete from smsao.ga4_export_events g where g.event_name = set_ga4_export.event_name;
  end if;
  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  values (smsao.caller_id(), 'set_ga4_export', 'ga4_export_events', set_ga4_export.event_name,
          pg_catalog.jsonb_build_object('enabled', was), pg_catalog.jsonb_build_object('enabled', enabled));
end
$$;
revoke all on function public.set_ga4_export(text, boolean) from public, anon, authenticated, service_role;
grant execute on function public.set_ga4_export(text, boolean) to authenticated, service_role;

-- The rollups from the data already there, when the analytics are installed (and by
-- smsao.rebuild_analytics()): milestones and signups' day counts from the base tables,
-- event counts from business_events, every month marked for a recount.
create or replace function smsao.backfill_analytics() returns void
  language plpgsql
  set search_path = ''
as $$
declare
  ids uuid[];
  times timestamptz[];
begin
  perform smsao.bump_event_counts(pg_catalog.array_agg('signed_up'::text), pg_catalog.array_agg(g.day),
                                  pg_catalog.array_agg(g.n))
  from (select (p.created_at at time zone 'UTC')::date as day, pg_catalog.count(*) as n from public.profiles p group by 1) g;
  select pg_catalog.array_agg(g.user_id order by g.user_id), pg_catalog.array_agg(g.at order by g.user_id) into ids, times
  from (select r.user_id, pg_catalog.min(r.created_at) as at from public.credit_requests r group by 1) g;
  perform smsao.record_milestones('requested_credits', ids, times);
  select pg_catalog.array_agg(g.user_id order by g.user_id), pg_catalog.array_agg(g.at order by g.user_id) into ids, times
  from (select r.user_id, pg_catalog.min(r.processed_at) as at from public.credit_requests r
        where r.status = 'approved' group by 1) g;
  perform smsao.record_milestones('purchased_credits', ids, times);
  select pg_catalog.array_agg(g.user_id order by g.user_id), pg_catalog.array_agg(g.at order by g.user_id) into ids, times
  from (select s.user_id, pg_catalog.min(s.created_at) as at from public.sms_logs s group by 1) g;
  perform smsao.record_milestones('sent_sms', ids, times);
  select pg_catalog.array_agg(g.user_id order by g.user_id), pg_catalog.array_agg(g.at order by g.user_id) into ids, times
  from (select c.user_id, pg_catalog.min(c.created_at) as at from public.campaigns c group by 1) g;
  perform smsao.record_milestones('created_campaign', ids, times);
  select pg_catalog.array_agg(g.user_id order by g.user_id), pg_catalog.array_agg(g.at order by g.user_id) into ids, times
  from (select j.user_id, pg_catalog.min(j.completed_at) as at from public.contact_import_jobs j
        where j.status = 'completed' and j.completed_at is not null group by 1) g;
  perform smsao.record_milestones('imported_contacts', ids, times);
  perform smsao.bump_event_counts(pg_catalog.array_agg(e.event_name), pg_catalog.array_agg(e.day),
                                  pg_catalog.array_agg(e.events))
  from (select (b.occurred_at at time zone 'UTC')::date as day, b.event_name, pg_catalog.count(*) as events
        from public.business_events b group by 1, 2) e;
  perform smsao.mark_business_months(array['-infinity'::date]);
end
$$;
revoke all on function smsao.backfill_analytics() from public, anon, authenticated, service_role;

-- Rebuild every rollup from the base tables (a repair after writes that bypassed the
-- triggers). Milestones whose rows were deleted since are forgotten: only what the base
-- tables still show comes back. Owner only.
create or replace function smsao.rebuild_analytics() returns void
  language plpgsql
  set search_path = ''
as $$
begin
  lock table smsao.user_milestones, smsao.event_counts, smsao.business_months in exclusive mode;
  delete from smsao.user_milestones;
  delete from smsao.event_counts;
  delete from smsao.business_months;
  perform smsao.backfill_analytics();
  perform smsao.refresh_business_months();
end
$$;
revoke all on function smsao.rebuild_analytics() from public, anon, authenticated, service_role;

-- What /metrics exports: the current month's revenue and paying customers, and the events
-- counted per name since the start. Monitoring aggregates for operators (like the health
-- check: not audited per scrape).
create or replace function public.analytics_live_figures()
  returns table (month date, revenue numeric, paying_customers bigint, events jsonb)
  language plpgsql security definer
  set search_path = ''
as $$
declare
  current_month date := smsao.utc_month(pg_catalog.now());
  figures smsao.business_months;
begin
  perform smsao.require_operator('analytics_live_figures');
  select * into figures from smsao.fresh_business_months() b where b.month = current_month;
  return query
  select current_month, coalesce(figures.revenue, 0), coalesce(figures.paying_customers, 0),
         coalesce((select pg_catalog.jsonb_object_agg(e.event_name, e.events)
                   from (select c.event_name, pg_catalog.sum(c.events) as events
                         from smsao.event_counts c group by c.event_name) e), '{}'::jsonb);
end
$$;
revoke all on function public.analytics_live_figures() from public, anon, authenticated, service_role;
grant execute on function public.analytics_live_figures() to authenticated, service_role;


-- ==== sql/functions/analytics_triggers.sql (as frozen by 0010_analytics) ====
-- Statement-level triggers of the analytics rollups (sql/triggers/analytics.sql). Each
-- reads its statement's transition table once, aggregates it per user (or per month), and
-- hands the result to smsao.record_milestones / smsao.mark_business_months: one call per
-- statement, whatever its row count (ENGINEERING.md, "Learned since").

-- signed_up is profiles.created_at itself (the funnel and the cohorts read profiles): a
-- signup writes no milestone row, only its day count, and its GA4 event when opted in.
create or replace function smsao.analytics_profiles_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  times timestamptz[];
begin
  perform smsao.bump_event_counts(pg_catalog.array_agg('signed_up'::text), pg_catalog.array_agg(g.day),
                                  pg_catalog.array_agg(g.n))
  from (select (n.created_at at time zone 'UTC')::date as day, pg_catalog.count(*) as n from new_rows n group by 1) g;
  if exists (select from smsao.ga4_export_events g where g.event_name = 'signed_up') then
    select pg_catalog.array_agg(n.user_id), pg_catalog.array_agg(n.created_at) into ids, times from new_rows n;
    perform smsao.queue_ga4('signed_up', ids, times, pg_catalog.array_fill(null::jsonb, array[cardinality(ids)]));
  end if;
  return null;
end
$$;
revoke all on function smsao.analytics_profiles_insert() from public, anon, authenticated, service_role;

-- A profile deleted takes its signup out of the day counts, as the cohorts lose it.
create or replace function smsao.analytics_profiles_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_event_counts(pg_catalog.array_agg('signed_up'::text), pg_catalog.array_agg(g.day),
                                  pg_catalog.array_agg(-g.n))
  from (select (o.created_at at time zone 'UTC')::date as day, pg_catalog.count(*) as n from old_rows o group by 1) g;
  return null;
end
$$;
revoke all on function smsao.analytics_profiles_delete() from public, anon, authenticated, service_role;

-- requested_credits (created_at), and for rows written already approved (a loader),
-- purchased_credits and the months of their revenue.
create or replace function smsao.analytics_credit_requests_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  times timestamptz[];
  months date[];
begin
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.at) into ids, times
  from (select n.user_id, pg_catalog.min(n.created_at) as at from new_rows n group by n.user_id) g;
  perform smsao.record_milestones('requested_credits', ids, times);

  ids := null;
  times := null;
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.at) into ids, times
  from (select n.user_id, pg_catalog.min(n.processed_at) as at from new_rows n
        where n.status = 'approved' group by n.user_id) g;
  if ids is not null then
    perform smsao.record_milestones('purchased_credits', ids, times);
    select pg_catalog.array_agg(distinct pg_catalog.date_trunc('month', n.processed_at, 'UTC')::date) into months
    from new_rows n where n.status = 'approved';
    perform smsao.mark_business_months(months);
  end if;
  return null;
end
$$;
revoke all on function smsao.analytics_credit_requests_insert() from public, anon, authenticated, service_role;

-- An approval (or any change to an approved request's user, amount or time): the first
-- purchase, and the months whose revenue moved.
create or replace function smsao.analytics_credit_requests_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  times timestamptz[];
  months date[];
begin
  with changed as (
    select o.status as old_status, o.processed_at as old_at, n.status, n.processed_at, n.user_id
    from old_rows o join new_rows n on n.id = o.id
    where (o.status = 'approved' or n.status = 'approved')
      and (o.status, o.processed_at, o.amount, o.user_id) is distinct from (n.status, n.processed_at, n.amount, n.user_id)
  )
  select (select pg_catalog.array_agg(distinct m) from (
            select pg_catalog.date_trunc('month', c.old_at, 'UTC')::date as m from changed c where c.old_status = 'approved'
            union all
            select pg_catalog.date_trunc('month', c.processed_at, 'UTC')::date from changed c where c.status = 'approved') x),
         (select pg_catalog.array_agg(g.user_id) from (select c.user_id from changed c where c.status = 'approved'
                                                       group by c.user_id order by c.user_id) g),
         (select pg_catalog.array_agg(g.at) from (select c.user_id, pg_catalog.min(c.processed_at) as at from changed c
                                                  where c.status = 'approved' group by c.user_id order by c.user_id) g)
    into months, ids, times;
  if months is not null then
    perform smsao.mark_business_months(months);
    perform smsao.record_milestones('purchased_credits', ids, times);
  end if;
  return null;
end
$$;
revoke all on function smsao.analytics_credit_requests_update() from public, anon, authenticated, service_role;

create or replace function smsao.analytics_credit_requests_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  months date[];
begin
  select pg_catalog.array_agg(distinct pg_catalog.date_trunc('month', o.processed_at, 'UTC')::date) into months
  from old_rows o where o.status = 'approved';
  perform smsao.mark_business_months(months);
  return null;
end
$$;
revoke all on function smsao.analytics_credit_requests_delete() from public, anon, authenticated, service_role;

-- Refunds are negative revenue at their created_at.
create or replace function smsao.analytics_refunds_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  months date[];
begin
  select pg_catalog.array_agg(distinct pg_catalog.date_trunc('month', n.created_at, 'UTC')::date) into months
  from new_rows n where n.kind = 'refund';
  perform smsao.mark_business_months(months);
  return null;
end
$$;
revoke all on function smsao.analytics_refunds_insert() from public, anon, authenticated, service_role;

create or replace function smsao.analytics_refunds_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  months date[];
begin
  select pg_catalog.array_agg(distinct pg_catalog.date_trunc('month', o.created_at, 'UTC')::date) into months
  from old_rows o where o.kind = 'refund';
  perform smsao.mark_business_months(months);
  return null;
end
$$;
revoke all on function smsao.analytics_refunds_delete() from public, anon, authenticated, service_role;

create or replace function smsao.analytics_refunds_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  months date[];
begin
  select pg_catalog.array_agg(distinct pg_catalog.date_trunc('month', x.created_at, 'UTC')::date) into months
  from (select o.created_at from old_rows o where o.kind = 'refund'
        union all
        select n.created_at from new_rows n where n.kind = 'refund') x;
  perform smsao.mark_business_months(months);
  return null;
end
$$;
revoke all on function smsao.analytics_refunds_update() from public, anon, authenticated, service_role;

-- A price change reprices every month from the earliest valid_from it touches.
create or replace function smsao.analytics_prices_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  earliest date;
begin
  select smsao.utc_month(pg_catalog.min(n.valid_from)) into earliest from new_rows n;
  perform smsao.mark_business_months(array[earliest]);
  return null;
end
$$;
revoke all on function smsao.analytics_prices_insert() from public, anon, authenticated, service_role;

create or replace function smsao.analytics_prices_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  earliest date;
begin
  select smsao.utc_month(pg_catalog.min(o.valid_from)) into earliest from old_rows o;
  perform smsao.mark_business_months(array[earliest]);
  return null;
end
$$;
revoke all on function smsao.analytics_prices_delete() from public, anon, authenticated, service_role;

create or replace function smsao.analytics_prices_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  earliest date;
begin
  select smsao.utc_month(pg_catalog.min(x.valid_from)) into earliest
  from (select o.valid_from from old_rows o union all select n.valid_from from new_rows n) x;
  perform smsao.mark_business_months(array[earliest]);
  return null;
end
$$;
revoke all on function smsao.analytics_prices_update() from public, anon, authenticated, service_role;

-- Whole-table changes of the revenue sources: recount every month.
create or replace function smsao.analytics_recount_all_months() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.mark_business_months(array['-infinity'::date]);
  return null;
end
$$;
revoke all on function smsao.analytics_recount_all_months() from public, anon, authenticated, service_role;

create or replace function smsao.analytics_sms_logs_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  times timestamptz[];
begin
  -- The hot path (every SMS): only users without an earlier first SMS go on; most have one.
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.at) into ids, times
  from (select n.user_id, pg_catalog.min(n.created_at) as at from new_rows n group by n.user_id) g
  where not exists (select from smsao.user_milestones m
                    where m.user_id = g.user_id and m.milestone = 'sent_sms' and m.first_at <= g.at);
  perform smsao.record_milestones('sent_sms', ids, times);
  return null;
end
$$;
revoke all on function smsao.analytics_sms_logs_insert() from public, anon, authenticated, service_role;

create or replace function smsao.analytics_campaigns_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  times timestamptz[];
begin
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.at) into ids, times
  from (select n.user_id, pg_catalog.min(n.created_at) as at from new_rows n group by n.user_id) g;
  perform smsao.record_milestones('created_campaign', ids, times);
  return null;
end
$$;
revoke all on function smsao.analytics_campaigns_insert() from public, anon, authenticated, service_role;

-- imported_contacts: a job completed (written completed, or moved there), at completed_at.
create or replace function smsao.analytics_import_jobs_written() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  times timestamptz[];
begin
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.at) into ids, times
  from (select n.user_id, pg_catalog.min(n.completed_at) as at from new_rows n
        where n.status = 'completed' and n.completed_at is not null group by n.user_id) g;
  perform smsao.record_milestones('imported_contacts', ids, times);
  return null;
end
$$;
revoke all on function smsao.analytics_import_jobs_written() from public, anon, authenticated, service_role;

-- Custom events: the day counts, and the GA4 queue for the names opted in.
create or replace function smsao.analytics_events_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  r record;
begin
  perform smsao.bump_event_counts(pg_catalog.array_agg(g.event_name), pg_catalog.array_agg(g.day),
                                  pg_catalog.array_agg(g.events))
  from (select n.event_name, (n.occurred_at at time zone 'UTC')::date as day, pg_catalog.count(*) as events
        from new_rows n group by 1, 2) g;
  for r in select n.event_name, pg_catalog.array_agg(n.user_id order by n.id) as ids,
                  pg_catalog.array_agg(n.occurred_at order by n.id) as times,
                  pg_catalog.array_agg(n.properties order by n.id) as params
           from new_rows n
           where n.event_name in (select g.event_name from smsao.ga4_export_events g)
           group by n.event_name loop
    perform smsao.queue_ga4(r.event_name, r.ids, r.times, r.params);
  end loop;
  return null;
end
$$;
revoke all on function smsao.analytics_events_insert() from public, anon, authenticated, service_role;

create or replace function smsao.analytics_events_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_event_counts(pg_catalog.array_agg(g.event_name), pg_catalog.array_agg(g.day),
                                  pg_catalog.array_agg(-g.events))
  from (select o.event_name, (o.occurred_at at time zone 'UTC')::date as day, pg_catalog.count(*) as events
        from old_rows o group by 1, 2) g;
  return null;
end
$$;
revoke all on function smsao.analytics_events_delete() from public, anon, authenticated, service_role;

-- Admins' changes to prices and spend, one admin_audit_logs row per changed row. The
-- statement's rows pair up by id (an update never changes it: identity always).
create or replace function smsao.audit_analytics_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  select smsao.caller_id(), 'insert_' || tg_table_name, tg_table_name, n.row ->> 'id', null, n.row
  from (select pg_catalog.to_jsonb(x) as row from new_rows x) n;
  return null;
end
$$;
revoke all on function smsao.audit_analytics_insert() from public, anon, authenticated, service_role;

create or replace function smsao.audit_analytics_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  select smsao.caller_id(), 'update_' || tg_table_name, tg_table_name, n.row ->> 'id', o.row, n.row
  from (select pg_catalog.to_jsonb(x) as row from old_rows x) o
  join (select pg_catalog.to_jsonb(x) as row from new_rows x) n on n.row -> 'id' = o.row -> 'id';
  return null;
end
$$;
revoke all on function smsao.audit_analytics_update() from public, anon, authenticated, service_role;

create or replace function smsao.audit_analytics_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  insert into public.admin_audit_logs (admin_id, action, target_table, target_id, old_values, new_values)
  select smsao.caller_id(), 'delete_' || tg_table_name, tg_table_name, o.row ->> 'id', o.row, null
  from (select pg_catalog.to_jsonb(x) as row from old_rows x) o;
  return null;
end
$$;
revoke all on function smsao.audit_analytics_delete() from public, anon, authenticated, service_role;


-- ==== sql/functions/health_counters.sql (as frozen by 0005_hardening) ====
-- The live counters behind production_system_health_check() (table smsao.health_counters,
-- triggers in sql/triggers/health_counters.sql). Every change to a counted table adjusts
-- the counters in the same transaction, so a health check sees exactly what its snapshot
-- sees, at the cost of a few small-table reads however big the data grows.
--
-- Metrics kept here:
--   total_users              rows of public.profiles
--   pending_credit_requests  credit_requests with status 'pending'
--   orphaned_sms_logs        sms_logs rows whose user_id has no profile
--   orphaned_otp_codes       otp_codes rows with a user_id that has no profile
--   sms, sms_failed          sms_logs rows (all / status 'failed') per hour of created_at (UTC),
--                            kept for the last 48 hours of created_at
--
-- Advisory lock keys used by the monitoring code (two-int form, first key 7411220..7411229):
--   (7411220, 1)       one record_health_snapshot() at a time
--   (7411221, bucket)  owner-id buckets of the orphan counters (smsao.entering_orphans)

-- Add `delta` to a metric without waiting for any other writer: take any row of the
-- metric that no other transaction holds, or start a new row. Row count per metric stays
-- near the peak number of concurrent writers; smsao.compact_health_counters folds them.
create or replace function smsao.bump_counter(metric_name text, at_bucket timestamptz, delta bigint) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if delta = 0 then
    return;
  end if;
  update smsao.health_counters c set value = c.value + delta
  where c.id = (select h.id from smsao.health_counters h
                where h.metric = metric_name and h.bucket = at_bucket
                limit 1 for update skip locked);
  if not found then
    insert into smsao.health_counters (metric, bucket, value) values (metric_name, at_bucket, delta);
  end if;
end
$$;
revoke all on function smsao.bump_counter(text, timestamptz, bigint) from public, anon, authenticated, service_role;

-- The hour bucket of a timestamp, the same in every session time zone.
create or replace function smsao.hour_bucket(ts timestamptz) returns timestamptz
  language sql immutable parallel safe
  set search_path = ''
as $$
  select pg_catalog.date_bin('1 hour', ts, '2000-01-01 00:00:00+00'::timestamptz)
$$;
revoke all on function smsao.hour_bucket(timestamptz) from public, anon, authenticated, service_role;

-- Orphan accounting. A row of sms_logs / otp_codes is orphaned when its user_id has no
-- profile; smsao.missing_owners holds exactly those user ids that rows refer to. Four
-- kinds of change move the count, and each is made exact under concurrency by a lock:
--
--  * rows entering (insert, new side of an update), smsao.entering_orphans: owners found
--    are locked FOR KEY SHARE, as a foreign key check does, so a concurrent deletion of
--    the profile waits and then counts these rows itself. For owners not found we take
--    the exclusive advisory lock of their id bucket, look again, and record them in
--    missing_owners; a transaction creating such a profile holds that bucket shared.
--  * rows leaving (delete, old side of an update): a row was orphaned iff its owner is in
--    missing_owners. No lock: a concurrent profile insert/delete locks the rows it counts
--    (FOR KEY SHARE), so either it waited for our deletion or our deletion waits for its
--    commit and then sees its change of missing_owners; each row is counted once.
--  * a profile deleted, smsao.count_profiles_delete: its rows become orphans.
--  * a profile created, smsao.count_profiles_insert: an id in missing_owners (an account
--    re-created with an old id) adopts its rows.
-- Advisory buckets: (7411221, hashtext(user_id) & 1023).

-- How many of some entering rows are orphaned. owner_ids/row_counts: the distinct
-- non-null user_ids of the rows and how many rows each has.
create or replace function smsao.entering_orphans(owner_ids uuid[], row_counts bigint[]) returns bigint
  language plpgsql
  set search_path = ''
as $$
declare
  missing uuid[];
begin
  if coalesce(cardinality(owner_ids), 0) = 0 then
    return 0::bigint;
  end if;
  -- Which owners exist is what this statement locked: the lock and the look are one,
  -- so a profile committed or deleted in between cannot slip past both.
  missing := array(select u from unnest(owner_ids) u
                   except
                   select k.user_id from (select p.user_id from public.profiles p
                                          where p.user_id = any (owner_ids) for key share) k);
  if cardinality(missing) = 0 then
    return 0::bigint;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(7411221, s.bucket)
  from (select distinct (pg_catalog.hashtext(u::text) & 1023) as bucket
        from unnest(missing) u order by 1) s;
  -- A profile for one of these may have committed while we waited.
  missing := array(select u from unnest(missing) u
                   except
                   select k.user_id from (select p.user_id from public.profiles p
                                          where p.user_id = any (missing) for key share) k);
  if cardinality(missing) = 0 then
    return 0::bigint;
  end if;
  insert into smsao.missing_owners (user_id) select u from unnest(missing) u on conflict do nothing;
  return (select coalesce(sum(t.n), 0)::bigint
          from unnest(owner_ids, row_counts) as t(u, n)
          join unnest(missing) as m(u) on m.u = t.u);
end
$$;
revoke all on function smsao.entering_orphans(uuid[], bigint[]) from public, anon, authenticated, service_role;

-- The trigger functions below run once per statement, one per table and event (a
-- trigger with transition tables serves one event). SECURITY DEFINER: whoever writes
-- the counted table needs no right on the smsao tables.

-- profiles: total_users, and the orphan counters when an owner comes or goes.
create or replace function smsao.count_profiles_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  users bigint;
  adopted uuid[];
  sms_rows bigint := 0::bigint;
  otp_rows bigint := 0::bigint;
begin
  select count(*) into users from new_rows;
  -- Wait for in-flight writers of ownerless rows of these ids (they hold the bucket
  -- exclusively), then take over the ids' rows if any were left by an old account.
  perform pg_catalog.pg_advisory_xact_lock_shared(7411221, s.bucket)
  from (select distinct (pg_catalog.hashtext(n.user_id::text) & 1023) as bucket
        from new_rows n order by 1) s;
  with gone as (
    delete from smsao.missing_owners m where m.user_id in (select n.user_id from new_rows n)
    returning m.user_id)
  select pg_catalog.array_agg(g.user_id) into adopted from gone g;
  if adopted is not null then
    select count(*) into sms_rows from (
      select from public.sms_logs l where l.user_id = any (adopted) for key share of l) x;
    select count(*) into otp_rows from (
      select from public.otp_codes o where o.user_id = any (adopted) for key share of o) x;
  end if;
  perform smsao.bump_counter('total_users', '-infinity', users);
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', -sms_rows);
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', -otp_rows);
  return null;
end
$$;
revoke all on function smsao.count_profiles_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_profiles_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  users bigint;
  sms_rows bigint;
  otp_rows bigint;
  sms_owners uuid[];
  otp_owners uuid[];
begin
  select count(*) into users from old_rows;
  -- The deleted users' rows become orphans. Locking them makes a concurrent deletion of
  -- one of them either finish first (not counted here) or wait for our commit.
  -- Cost: proportional to the deleted users' rows; deleting a user is rare.
  with locked as (
    select l.user_id from public.sms_logs l
    where l.user_id in (select o.user_id from old_rows o) for key share of l)
  select count(*), pg_catalog.array_agg(distinct k.user_id) into sms_rows, sms_owners from locked k;
  with locked as (
    select c.user_id from public.otp_codes c
    where c.user_id in (select o.user_id from old_rows o) for key share of c)
  select count(*), pg_catalog.array_agg(distinct k.user_id) into otp_rows, otp_owners from locked k;
  insert into smsao.missing_owners (user_id)
  select u from unnest(sms_owners || otp_owners) u on conflict do nothing;
  perform smsao.bump_counter('total_users', '-infinity', -users);
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', sms_rows);
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', otp_rows);
  return null;
end
$$;
revoke all on function smsao.count_profiles_delete() from public, anon, authenticated, service_role;

-- credit_requests: pending_credit_requests.
create or replace function smsao.count_credit_requests_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_credit_requests_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending')
    - (select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_update() from public, anon, authenticated, service_role;

create or replace function smsao.count_credit_requests_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    -(select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_delete() from public, anon, authenticated, service_role;

-- sms_logs: per-hour totals and failures (`sms`, `sms_failed`), and orphaned_sms_logs.
-- Hours older than 48 h are not kept: the health check reads the last 25.
create or replace function smsao.count_sms_logs_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  ids uuid[];
  counts bigint[];
begin
  for r in select pg_catalog.date_bin('1 hour', n.created_at, bucket_origin) as bucket, count(*) as total,
                  count(*) filter (where n.status = 'failed') as failed
           from new_rows n where n.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select n.user_id, count(*) as n from new_rows n group by 1) g;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', smsao.entering_orphans(ids, counts));
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_insert() from public, anon, authenticated, service_role;

create or replace function smsao.count_sms_logs_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  orphans bigint := 0::bigint;
begin
  for r in select pg_catalog.date_bin('1 hour', o.created_at, bucket_origin) as bucket, count(*) as total,
                  count(*) filter (where o.status = 'failed') as failed
           from old_rows o where o.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, -r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, -r.failed);
  end loop;
  if exists (select from smsao.missing_owners) then
    select count(*) into orphans from old_rows o join smsao.missing_owners m on m.user_id = o.user_id;
  end if;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', -orphans);
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_delete() from public, anon, authenticated, service_role;

-- Status updates (delivery reports) are the common case: they move a row in or out of
-- `sms_failed` and leave the rest alone; a changed user_id is a leaving old row plus an
-- entering new one.
create or replace function smsao.count_sms_logs_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  for r in select d.bucket, sum(d.total) as total, sum(d.failed) as failed
           from (select pg_catalog.date_bin('1 hour', n.created_at, bucket_origin) as bucket, 1 as total,
                        (n.status = 'failed')::int as failed
                 from new_rows n where n.created_at >= oldest
                 union all
                 select pg_catalog.date_bin('1 hour', o.created_at, bucket_origin), -1, -((o.status = 'failed')::int)
                 from old_rows o where o.created_at >= oldest) d
           group by d.bucket loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  -- A count, not EXISTS: under EXISTS the planner optimises for the first row and joins the
  -- transition tables by nested loop, comparing every pair when no row changed its owner
  -- (a status update, the usual case): quadratic in the statement's rows.
  if (select count(*) from old_rows o join new_rows n on n.id = o.id where n.user_id <> o.user_id) > 0 then
    select -count(*) into orphans
    from old_rows o join new_rows n on n.id = o.id join smsao.missing_owners m on m.user_id = o.user_id
    where n.user_id <> o.user_id;
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id <> o.user_id group by 1) g;
    orphans := orphans + smsao.entering_orphans(ids, counts);
  end if;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', orphans);
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_update() from public, anon, authenticated, service_role;

-- otp_codes: orphaned_otp_codes (OTPs without user_id are for phones, never orphaned).
create or replace function smsao.count_otp_codes_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
begin
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select n.user_id, count(*) as n from new_rows n where n.user_id is not null group by 1) g;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', smsao.entering_orphans(ids, counts));
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_insert() from public, anon, authenticated, service_role;

-- The retention cleanup deletes OTPs by the million: with no orphaned owners at all (the
-- usual case) this costs one look at an empty table per statement.
create or replace function smsao.count_otp_codes_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  orphans bigint := 0::bigint;
begin
  if exists (select from smsao.missing_owners) then
    select count(*) into orphans from old_rows o join smsao.missing_owners m on m.user_id = o.user_id;
  end if;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', -orphans);
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_delete() from public, anon, authenticated, service_role;

create or replace function smsao.count_otp_codes_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  -- A count, not EXISTS: see smsao.count_sms_logs_update.
  if (select count(*) from old_rows o join new_rows n on n.id = o.id
      where n.user_id is distinct from o.user_id) > 0 then
    select -count(*) into orphans
    from old_rows o join new_rows n on n.id = o.id join smsao.missing_owners m on m.user_id = o.user_id
    where n.user_id is distinct from o.user_id;
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id is distinct from o.user_id and n.user_id is not null group by 1) g;
    orphans := orphans + smsao.entering_orphans(ids, counts);
  end if;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', orphans);
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_update() from public, anon, authenticated, service_role;

-- Recompute every counter from the tables. Run by the migration that introduces the
-- counters, after a TRUNCATE or a change of profiles.user_id (both rare), and by a DBA
-- after loading data with triggers disabled (session_replication_role = replica).
-- Cost: one pass over each counted table. Writers of those tables wait meanwhile
-- (SHARE lock), which is what makes the result exact.
create or replace function smsao.recount_health_counters() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
begin
  lock table public.profiles, public.credit_requests, public.sms_logs, public.otp_codes in share mode;
  delete from smsao.health_counters;
  delete from smsao.missing_owners;
  with orphan_owners as (
    select l.user_id, count(*) as sms_rows, 0::bigint as otp_rows from public.sms_logs l
    where not exists (select from public.profiles p where p.user_id = l.user_id) group by 1
    union all
    select o.user_id, 0, count(*) from public.otp_codes o
    where o.user_id is not null and not exists (select from public.profiles p where p.user_id = o.user_id)
    group by 1
  ), recorded as (
    insert into smsao.missing_owners (user_id) select distinct x.user_id from orphan_owners x
  )
  insert into smsao.health_counters (metric, value)
  select 'total_users', count(*) from public.profiles
  union all
  select 'pending_credit_requests', count(*) from public.credit_requests where status = 'pending'
  union all
  select 'orphaned_sms_logs', coalesce(sum(x.sms_rows), 0) from orphan_owners x
  union all
  select 'orphaned_otp_codes', coalesce(sum(x.otp_rows), 0) from orphan_owners x;
  insert into smsao.health_counters (metric, bucket, value)
  select m.metric, b.bucket, m.value
  from (select smsao.hour_bucket(l.created_at) as bucket, count(*) as total,
               count(*) filter (where l.status = 'failed') as failed
        from public.sms_logs l where l.created_at >= oldest group by 1) b
  cross join lateral (values ('sms', b.total), ('sms_failed', b.failed)) as m(metric, value)
  where m.value <> 0;
  return (select pg_catalog.jsonb_object_agg(t.metric, t.total)
          from (select c.metric, sum(c.value) as total from smsao.health_counters c
                where c.bucket = '-infinity' group by c.metric) t);
end
$$;
revoke all on function smsao.recount_health_counters() from public, anon, authenticated, service_role;

create or replace function smsao.recount_health_counters_trigger() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.recount_health_counters();
  return null;
end
$$;
revoke all on function smsao.recount_health_counters_trigger() from public, anon, authenticated, service_role;

-- Fold each metric's rows into one and drop hours no reader needs, skipping rows that a
-- writer holds right now (they are folded next time). Returns the rows removed.
-- Run by record_health_snapshot() and the daily housekeeping; correctness never depends
-- on it, only the size of smsao.health_counters does.
create or replace function smsao.compact_health_counters() returns integer
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
  removed integer;
  folded integer := 0;
  r record;
begin
  delete from smsao.health_counters c
  where c.id in (select h.id from smsao.health_counters h
                 where h.bucket > '-infinity' and h.bucket < oldest
                 for update skip locked);
  get diagnostics removed = row_count;
  for r in select l.metric, l.bucket, pg_catalog.array_agg(l.id order by l.id) as ids, sum(l.value) as total
           from (select h.id, h.metric, h.bucket, h.value from smsao.health_counters h
                 for update skip locked) l
           group by l.metric, l.bucket having count(*) > 1 loop
    update smsao.health_counters c set value = r.total where c.id = r.ids[1];
    delete from smsao.health_counters c where c.id = any (r.ids[2:]);
    folded := folded + cardinality(r.ids) - 1;
  end loop;
  return removed + folded;
end
$$;
revoke all on function smsao.compact_health_counters() from public, anon, authenticated, service_role;


-- ==== sql/policies/analytics_internal.sql (as frozen by 0010_analytics) ====
-- Internal state of the analytics (schema smsao, not exposed by PostgREST): only the
-- owner's SECURITY DEFINER functions and a DBA touch it. RLS without policies denies
-- anyone else who might be granted access by mistake. The GA4 pseudonym key is here.
alter table smsao.milestones enable row level security;
revoke all on table smsao.milestones from public, anon, authenticated, service_role;
alter table smsao.user_milestones enable row level security;
revoke all on table smsao.user_milestones from public, anon, authenticated, service_role;
alter table smsao.event_counts enable row level security;
revoke all on table smsao.event_counts from public, anon, authenticated, service_role;
alter table smsao.business_month_marks enable row level security;
revoke all on table smsao.business_month_marks from public, anon, authenticated, service_role;
alter table smsao.business_months enable row level security;
revoke all on table smsao.business_months from public, anon, authenticated, service_role;
alter table smsao.ga4_settings enable row level security;
revoke all on table smsao.ga4_settings from public, anon, authenticated, service_role;
alter table smsao.ga4_export_events enable row level security;
revoke all on table smsao.ga4_export_events from public, anon, authenticated, service_role;
alter table smsao.ga4_outbox enable row level security;
revoke all on table smsao.ga4_outbox from public, anon, authenticated, service_role;

-- The identity sequences of the analytics tables: Supabase's default privileges grant them
-- to the app roles; identity columns need no sequence privilege.
revoke all on sequence public.credit_prices_id_seq, public.acquisition_spend_id_seq,
  public.business_events_id_seq, smsao.business_month_marks_id_seq,
  smsao.ga4_outbox_id_seq from public, anon, authenticated, service_role;

