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

-- sent_sms, on every SMS written: only users without an earlier first SMS go on, and almost
-- every sender has one. Called by the sms_logs insert counter (smsao.count_sms_logs_insert,
-- sql/functions/health_counters.sql) with the statement's users and each one's earliest row,
-- from the grouping it makes for the orphan counters anyway: one pass over the statement's rows
-- serves both (a trigger of its own measured 1.22-1.25x a 10,000-user statement, this 1.15x);
-- `earliest` is the least of `times`, which that grouping finds for free.
-- A statement of few users looks each one up (an index probe). One of many users (a bulk load
-- over a large part of the senders) first asks one pass over the sent_sms rows which of them
-- had sent before the statement's earliest row: when all had, as usual, that is the whole cost
-- (probing each would cost more); the others, if any, are looked up singly. Reads only: no lock
-- beyond what recording a first SMS takes (smsao.record_milestones).
create or replace function smsao.record_first_sms(user_ids uuid[], times timestamptz[], earliest timestamptz)
  returns void
  language plpgsql
  set search_path = ''
as $$
declare
  known uuid[];
begin
  if cardinality(user_ids) >= 1000 and cardinality(user_ids) * 32 > (select c.reltuples from pg_catalog.pg_class c
                                                                    where c.oid = 'smsao.user_milestones'::pg_catalog.regclass) then
    -- Dynamic SQL, so that the array is planned as the constant it is (a hashed = ANY).
    execute $q$
      select pg_catalog.array_agg(m.user_id) from smsao.user_milestones m
      where m.milestone = 'sent_sms' and m.first_at <= $2 and m.user_id = any ($1) $q$
      into known using user_ids, earliest;
    if cardinality(known) = cardinality(user_ids) then
      return;
    end if;
    execute $q$
      select pg_catalog.array_agg(s.user_id), pg_catalog.array_agg(s.at) from unnest($1, $2) s(user_id, at)
      where s.user_id not in (select unnest($3)) $q$
      into user_ids, times using user_ids, times, coalesce(known, '{}');
  end if;
  -- One probe per user, whatever the planner thinks of the array's size (a scalar subquery
  -- is never turned into a join that would hash every sent_sms row).
  select pg_catalog.array_agg(s.user_id), pg_catalog.array_agg(s.at) into user_ids, times
  from unnest(user_ids, times) s(user_id, at)
  where coalesce((select m.first_at <= s.at from smsao.user_milestones m
                  where m.user_id = s.user_id and m.milestone = 'sent_sms'), false) = false;
  perform smsao.record_milestones('sent_sms', user_ids, times);
end
$$;
revoke all on function smsao.record_first_sms(uuid[], timestamptz[], timestamptz) from public, anon, authenticated, service_role;

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

-- Users' occurrences of custom events (one entry per name and user, its earliest time in
-- the statement): keep each user's first time per name (smsao.event_firsts). The anti-join
-- skips users already there earlier (the common case); the upsert settles concurrent
-- writers. An occurrence before an inexact row's lower bound is the user's first for sure.
create or replace function smsao.record_event_firsts(names text[], user_ids uuid[], times timestamptz[])
  returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if coalesce(cardinality(names), 0) = 0 then
    return;
  end if;
  insert into smsao.event_firsts as f (event_name, user_id, first_at)
  select c.name, c.user_id, c.at from unnest(names, user_ids, times) c(name, user_id, at)
  where not exists (select from smsao.event_firsts x
                    where x.event_name = c.name and x.user_id = c.user_id and x.first_at <= c.at)
  order by 1, 2
  on conflict on constraint event_firsts_pkey do update set first_at = excluded.first_at, exact = true
    where excluded.first_at < f.first_at;
end
$$;
revoke all on function smsao.record_event_firsts(text[], uuid[], timestamptz[]) from public, anon, authenticated, service_role;

-- Custom events: the day counts, each user's first occurrence per name (smsao.event_firsts,
-- for the funnel), and the GA4 queue for the names opted in.
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
  perform smsao.record_event_firsts(pg_catalog.array_agg(g.event_name), pg_catalog.array_agg(g.user_id),
                                    pg_catalog.array_agg(g.at))
  from (select n.event_name, n.user_id, pg_catalog.min(n.occurred_at) as at from new_rows n group by 1, 2) g;
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

-- Occurrences taken away (a deletion, or the old side of an update): a stored first time
-- they may have been is kept as a lower bound, marked inexact (see smsao.event_firsts).
create or replace function smsao.forget_event_firsts(names text[], user_ids uuid[], times timestamptz[])
  returns void
  language plpgsql
  set search_path = ''
as $$
begin
  update smsao.event_firsts f set exact = false
  from (select g.name, g.user_id, pg_catalog.min(g.at) as at from unnest(names, user_ids, times) g(name, user_id, at)
        group by 1, 2) g
  where f.event_name = g.name and f.user_id = g.user_id and f.exact and g.at <= f.first_at;
end
$$;
revoke all on function smsao.forget_event_firsts(text[], uuid[], timestamptz[]) from public, anon, authenticated, service_role;

create or replace function smsao.analytics_events_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_event_counts(pg_catalog.array_agg(g.event_name), pg_catalog.array_agg(g.day),
                                  pg_catalog.array_agg(-g.events))
  from (select o.event_name, (o.occurred_at at time zone 'UTC')::date as day, pg_catalog.count(*) as events
        from old_rows o group by 1, 2) g;
  perform smsao.forget_event_firsts(pg_catalog.array_agg(o.event_name), pg_catalog.array_agg(o.user_id),
                                    pg_catalog.array_agg(o.occurred_at))
  from old_rows o;
  return null;
end
$$;
revoke all on function smsao.analytics_events_delete() from public, anon, authenticated, service_role;

-- Only the owner updates events (a correction): the old rows leave, the new ones come, for
-- the day counts and the first occurrences alike.
create or replace function smsao.analytics_events_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_event_counts(pg_catalog.array_agg(g.event_name), pg_catalog.array_agg(g.day),
                                  pg_catalog.array_agg(g.events))
  from (select x.event_name, (x.occurred_at at time zone 'UTC')::date as day, pg_catalog.sum(x.delta)::bigint as events
        from (select o.event_name, o.occurred_at, -1 as delta from old_rows o
              union all
              select n.event_name, n.occurred_at, 1 from new_rows n) x
        group by 1, 2) g;
  perform smsao.forget_event_firsts(pg_catalog.array_agg(o.event_name), pg_catalog.array_agg(o.user_id),
                                    pg_catalog.array_agg(o.occurred_at))
  from old_rows o;
  perform smsao.record_event_firsts(pg_catalog.array_agg(g.event_name), pg_catalog.array_agg(g.user_id),
                                    pg_catalog.array_agg(g.at))
  from (select n.event_name, n.user_id, pg_catalog.min(n.occurred_at) as at from new_rows n group by 1, 2) g;
  return null;
end
$$;
revoke all on function smsao.analytics_events_update() from public, anon, authenticated, service_role;

-- TRUNCATE holds business_events exclusively: nothing is written beside it, so the custom
-- events' counts and first occurrences go with the rows.
create or replace function smsao.analytics_events_truncate() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  delete from smsao.event_firsts;
  delete from smsao.event_counts c where not exists (select from smsao.milestones m where m.name = c.event_name);
  return null;
end
$$;
revoke all on function smsao.analytics_events_truncate() from public, anon, authenticated, service_role;

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
