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

-- The funnel is one query, built per call: a CTE per step, s1 .. sN, each the users who
-- reached that step with (user_id, at = their time for it, started = their step-1 time).
-- Step names are validated identifiers, quoted as literals. Parameters: $1 since, $2 until,
-- $3 within. Every step's time lies in [$1, $2 + $3]: said to the planner, that bound lets a
-- step read just that window of an index instead of looking each user up.

-- Step 1: the users whose time for it is in [since, until).
create or replace function smsao.funnel_first_sql(step text) returns text
  language plpgsql stable
  set search_path = ''
as $$
begin
  if step = 'signed_up' then
    return 'select p.user_id, p.created_at as at, p.created_at as started from public.profiles p
            where p.created_at >= $1 and p.created_at < $2';
  elsif smsao.is_milestone(step) then
    return pg_catalog.format(
      'select m.user_id, m.first_at as at, m.first_at as started from smsao.user_milestones m
       where m.milestone = %L and m.first_at >= $1 and m.first_at < $2', step);
  end if;
  -- A custom event: its first occurrence in the range.
  return pg_catalog.format(
    'select e.user_id, pg_catalog.min(e.occurred_at) as at, pg_catalog.min(e.occurred_at) as started
     from public.business_events e where e.event_name = %L and e.occurred_at >= $1 and e.occurred_at < $2
     group by e.user_id', step);
end
$$;
revoke all on function smsao.funnel_first_sql(text) from public, anon, authenticated, service_role;

-- Step k > 1 from the CTE `previous`: its earliest time at or after the previous step's time
-- and no later than started + within.
create or replace function smsao.funnel_next_sql(step text, previous text) returns text
  language plpgsql stable
  set search_path = ''
as $$
begin
  if step = 'signed_up' then
    return pg_catalog.format(
      'select s.user_id, p.created_at as at, s.started from %I s join public.profiles p on p.user_id = s.user_id
       where p.created_at >= s.at and p.created_at <= s.started + $3 and p.created_at between $1 and $2 + $3',
      previous);
  elsif smsao.is_milestone(step) then
    return pg_catalog.format(
      'select s.user_id, m.first_at as at, s.started from %I s
       join smsao.user_milestones m on m.user_id = s.user_id and m.milestone = %L
       where m.first_at >= s.at and m.first_at <= s.started + $3 and m.first_at between $1 and $2 + $3',
      previous, step);
  end if;
  -- A custom event. A user's first occurrence ever (smsao.event_firsts) is the earliest at or
  -- after their previous step's time when it is exact and not before that time: the firsts
  -- inside the window come from one index range. Only users without one there are looked up
  -- singly (did they do it before the window?); those who did it before their previous step,
  -- or whose first is only a lower bound, are answered by their events.
  return pg_catalog.format(
    'select r.user_id, r.at, r.started from (
       select s.user_id, s.started,
              case when f.exact and f.first_at >= s.at then f.first_at
                   when f.first_at is not null
                        or exists (select from smsao.event_firsts b
                                   where b.event_name = %2$L and b.user_id = s.user_id and b.first_at < $1)
                   then (select pg_catalog.min(e.occurred_at) from public.business_events e
                         where e.user_id = s.user_id and e.event_name = %2$L
                           and e.occurred_at >= s.at and e.occurred_at <= s.started + $3)
              end as at
       from %1$I s
       left join smsao.event_firsts f
         on f.event_name = %2$L and f.user_id = s.user_id and f.first_at between $1 and $2 + $3
       where f.first_at is null or f.first_at <= s.started + $3) r
     where r.at <= r.started + $3',
    previous, step);
end
$$;
revoke all on function smsao.funnel_next_sql(text, text) from public, anon, authenticated, service_role;

-- The whole query: the steps' CTEs, then how many users each one has.
create or replace function smsao.funnel_sql(steps text[]) returns text
  language plpgsql stable
  set search_path = ''
as $$
declare
  counting text := 'with s1 as (' || smsao.funnel_first_sql(steps[1]) || ')';
begin
  for i in 2 .. cardinality(steps) loop
    counting := counting || pg_catalog.format(', s%s as (%s)', i, smsao.funnel_next_sql(steps[i], 's' || (i - 1)));
  end loop;
  return counting || ' select array[' || (select pg_catalog.string_agg(pg_catalog.format('(select pg_catalog.count(*) from s%s)', i), ', ')
                                       from pg_catalog.generate_series(1, cardinality(steps)) i) || ']';
end
$$;
revoke all on function smsao.funnel_sql(text[]) from public, anon, authenticated, service_role;

create or replace function public.conversion_funnel(steps text[], since timestamptz, until timestamptz,
                                                    within interval default '30 days')
  returns table (step integer, event_name text, users bigint,
                 conversion_from_first numeric, conversion_from_previous numeric)
  language plpgsql security definer
  set search_path = ''
as $$
declare
  args jsonb := pg_catalog.jsonb_build_object('steps', steps, 'since', since, 'until', until, 'within', within);
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
  -- Planned for these values (EXECUTE): the first step's size decides between index ranges
  -- with hash joins and lookups per user.
  execute smsao.funnel_sql(steps) into counts using since, until, within;

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

-- Each user's first occurrence per custom event, recounted from business_events (exact).
create or replace function smsao.backfill_event_firsts() returns void
  language plpgsql
  set search_path = ''
as $$
begin
  insert into smsao.event_firsts as f (event_name, user_id, first_at)
  select b.event_name, b.user_id, pg_catalog.min(b.occurred_at) from public.business_events b group by 1, 2
  on conflict on constraint event_firsts_pkey do update set first_at = excluded.first_at, exact = true
    where (f.first_at, f.exact) is distinct from (excluded.first_at, true);
end
$$;
revoke all on function smsao.backfill_event_firsts() from public, anon, authenticated, service_role;

-- The rollups from the data already there, when the analytics are installed (and by
-- smsao.rebuild_analytics()): milestones and signups' day counts from the base tables,
-- event counts and each user's first occurrence per name from business_events, every month
-- marked for a recount.
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
  perform smsao.backfill_event_firsts();
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
  lock table smsao.user_milestones, smsao.event_counts, smsao.event_firsts, smsao.business_months in exclusive mode;
  delete from smsao.user_milestones;
  delete from smsao.event_firsts;
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
