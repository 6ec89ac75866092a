"""`integrity` checks of the analytics rollups: each rollup equals a recount written here,
independently of the SQL that maintains it (sql/functions/analytics_rollups.sql).

The monthly figures are recounted lazily by design (a write marks its months; the first
reader recounts them): months at or after the earliest pending mark are not yet due and
are skipped. A milestone, once reached, stays reached when the rows that reached it are
deleted (the retention cleanup deletes old import jobs), so the stored first time may be
earlier than what the base tables still show, never later, and never missing."""
from __future__ import annotations

from runner.check import Check

_PRICE = """coalesce((select p.price_per_credit from public.credit_prices p where p.valid_from <= {t}
                      order by p.valid_from desc limit 1), 0)"""
_MONTH = "date_trunc('month', {t} at time zone 'UTC')::date"

BUSINESS_MONTHS = f"""
    with due as (select coalesce(min(k.month), 'infinity'::date) as upto from smsao.business_month_marks k),
    purchases as (
      select r.user_id, {_MONTH.format(t='r.processed_at')} as m,
             round(r.amount * {_PRICE.format(t='r.processed_at')}, 2) as rev
      from public.credit_requests r where r.status = 'approved'),
    refunds as (
      select {_MONTH.format(t='t.created_at')} as m,
             -round(abs(t.amount) * {_PRICE.format(t='t.created_at')}, 2) as rev
      from public.credit_transactions t where t.kind = 'refund'),
    per_user as (select p.user_id, p.m, sum(p.rev) as rev from purchases p group by 1, 2),
    firsts as (select u.user_id, min(u.m) as m from per_user u group by 1),
    months as (select u.m from per_user u union select f.m from refunds f
               union select (u.m + interval '1 month')::date from per_user u),
    recount as (
      select mo.m,
        coalesce((select sum(u.rev) from per_user u where u.m = mo.m), 0)
          + coalesce((select sum(f.rev) from refunds f where f.m = mo.m), 0) as revenue,
        coalesce((select sum(a.rev) from per_user a join per_user b
                    on b.user_id = a.user_id and b.m = (a.m - interval '1 month')::date
                  where a.m = mo.m), 0) as mrr,
        (select count(*) from per_user u where u.m = mo.m) as paying,
        (select count(*) from firsts f where f.m = mo.m) as new_paying,
        (select count(*) from per_user a where a.m = (mo.m - interval '1 month')::date
           and not exists (select from per_user b where b.user_id = a.user_id and b.m = mo.m)) as churned
      from months mo)
    select format('%s: rollup says revenue %s, mrr %s, paying %s, new %s, churned %s; '
                  'recount finds %s, %s, %s, %s, %s', coalesce(r.m, b.month),
                  coalesce(b.revenue, 0), coalesce(b.mrr, 0), coalesce(b.paying_customers, 0),
                  coalesce(b.new_paying_customers, 0), coalesce(b.churned_customers, 0),
                  coalesce(r.revenue, 0), coalesce(r.mrr, 0), coalesce(r.paying, 0),
                  coalesce(r.new_paying, 0), coalesce(r.churned, 0))
    from recount r full join smsao.business_months b on b.month = r.m, due
    where coalesce(r.m, b.month) < due.upto
      and (coalesce(b.revenue, 0), coalesce(b.mrr, 0), coalesce(b.paying_customers, 0),
           coalesce(b.new_paying_customers, 0), coalesce(b.churned_customers, 0))
          is distinct from
          (coalesce(r.revenue, 0), coalesce(r.mrr, 0), coalesce(r.paying, 0)::bigint,
           coalesce(r.new_paying, 0)::bigint, coalesce(r.churned, 0)::bigint)
    order by 1"""

MILESTONE_SOURCES = {
    "requested_credits": "select r.user_id, r.created_at from public.credit_requests r",
    "purchased_credits": "select r.user_id, r.processed_at from public.credit_requests r where r.status = 'approved'",
    "sent_sms": "select s.user_id, s.created_at from public.sms_logs s",
    "created_campaign": "select c.user_id, c.created_at from public.campaigns c",
    "imported_contacts": ("select j.user_id, j.completed_at from public.contact_import_jobs j"
                          " where j.status = 'completed' and j.completed_at is not null"),
}

MILESTONES = "\n    union all\n".join(
    f"""    select format('%s of user %s: first time %s, stored %s', '{name}', b.user_id, b.at,
                  coalesce(m.first_at::text, 'nothing'))
    from (select x.user_id, min(x.at) as at from ({source}) x(user_id, at) group by 1) b
    left join smsao.user_milestones m on m.user_id = b.user_id and m.milestone = '{name}'
    where m.first_at is null or m.first_at > b.at"""
    for name, source in MILESTONE_SOURCES.items())

EVENT_COUNTS = """
    with counted as (select c.day, c.event_name, sum(c.events) as n from smsao.event_counts c group by 1, 2),
    recount as (
      select x.day, x.event_name, count(*) as n
      from (select (m.first_at at time zone 'UTC')::date as day, m.milestone as event_name from smsao.user_milestones m
            union all
            select (p.created_at at time zone 'UTC')::date, 'signed_up' from public.profiles p
            union all
            select (e.occurred_at at time zone 'UTC')::date, e.event_name from public.business_events e) x
      group by 1, 2)
    select format('%s on %s: counted %s, recount finds %s', coalesce(c.event_name, r.event_name),
                  coalesce(c.day, r.day), coalesce(c.n, 0), coalesce(r.n, 0))
    from counted c full join recount r on r.day = c.day and r.event_name = c.event_name
    where coalesce(c.n, 0) <> coalesce(r.n, 0)
    order by 1"""

EVENT_FIRSTS = """
    with recount as (select e.event_name, e.user_id, min(e.occurred_at) as at
                     from public.business_events e group by 1, 2)
    select format('%s of user %s: first occurrence %s, stored %s%s', coalesce(r.event_name, f.event_name),
                  coalesce(r.user_id, f.user_id), coalesce(r.at::text, 'none'), coalesce(f.first_at::text, 'nothing'),
                  case when f.exact then '' else ' (a lower bound)' end)
    from recount r full join smsao.event_firsts f on f.event_name = r.event_name and f.user_id = r.user_id
    where r.at is null and f.exact                       -- an exact first with no event
       or f.first_at is null and r.at is not null        -- events without their first
       or f.exact and f.first_at <> r.at                 -- an exact first that is not the first
       or not f.exact and f.first_at > r.at              -- a lower bound above an occurrence
    order by 1"""

REMEDY = ("a write bypassed the analytics triggers (session_replication_role = replica, or a bad "
          "restore): as the schema owner, run `select smsao.rebuild_analytics()`")

CHECKS = [
    Check("analytics_business_months",
          "revenue, MRR and customer figures per month equal a recount from requests, refunds and prices",
          BUSINESS_MONTHS, REMEDY),
    Check("analytics_milestones",
          "every user's first time per milestone is stored, and no later than the base tables show",
          MILESTONES, REMEDY),
    Check("analytics_event_firsts",
          "each user's first occurrence per custom event equals a recount from business_events "
          "(or is a lower bound of it, after a deletion)",
          EVENT_FIRSTS, REMEDY),
    Check("analytics_event_counts",
          "events per day and name equal the signups, the milestones' first times and the custom events of that day",
          EVENT_COUNTS, REMEDY),
]
