"""CONTRACT section 7 holds exactly: business_metrics, conversion_funnel, retention_cohorts
and the rollups behind them equal an independent recount (tests/analytics_support.py) on
randomised history, refunds, price changes, backfills and deletions included, both after
the first load and after further writes that the rollups must follow."""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from analytics_support import MILESTONES, Recount, add_months, add_user, random_time
from support import SERVICE

START = datetime(2025, 1, 1, tzinfo=timezone.utc)
END = datetime(2026, 7, 1, tzinfo=timezone.utc)
FROM, TO = date(2024, 12, 1), date(2026, 8, 1)


def load_history(db, rng: random.Random, users: int) -> list:
    conn = db.conn
    ids = [add_user(conn, random_time(rng, START, END - timedelta(days=20))) for _ in range(users)]
    signed = dict(conn.execute("select user_id, created_at from public.profiles").fetchall())
    for _ in range(3):
        conn.execute("insert into public.credit_prices (valid_from, price_per_credit) values (%s, %s)"
                     " on conflict do nothing",
                     [random_time(rng, START - timedelta(days=60), END), Decimal(rng.randrange(500, 2000)) / 100])
    for channel in ("facebook", "google"):
        m = date(2025, 1, 1)
        while m < END.date():
            if rng.random() < 0.7:
                conn.execute("insert into public.acquisition_spend (month, channel, amount) values (%s, %s, %s)",
                             [m, channel, Decimal(rng.randrange(0, 100000)) / 100])
            m = add_months(m, 1)
    # Purchases: some written approved by a loader in bulk, some approved one by one.
    rows = []
    for u in ids:
        for _ in range(rng.randrange(0, 6)):
            created = random_time(rng, signed[u], END)
            processed = created + timedelta(hours=rng.randrange(0, 24 * 40))
            rows.append((u, rng.randrange(1, 500), created, processed))
    bulk, single = rows[: len(rows) // 2], rows[len(rows) // 2:]
    with conn.cursor() as cur:
        cur.executemany("insert into public.credit_requests (user_id, amount, status, created_at, processed_at)"
                        " values (%s, %s, 'approved', %s, %s)", bulk)
    for u, amount, created, processed in single:
        rid = conn.execute("insert into public.credit_requests (user_id, amount, created_at) values (%s, %s, %s)"
                           " returning id", [u, amount, created]).fetchone()[0]
        status = "approved" if rng.random() < 0.8 else "rejected"
        conn.execute("update public.credit_requests set status = %s, processed_at = %s where id = %s",
                     [status, processed, rid])
    for u in ids:
        for _ in range(rng.randrange(0, 2)):
            conn.execute("insert into public.credit_transactions (user_id, amount, kind, created_at)"
                         " values (%s, %s, 'refund', %s)", [u, rng.randrange(1, 100), random_time(rng, START, END)])
    # SMS in one bulk statement, campaigns, imports, custom events.
    sms = [(u, random_time(rng, signed[u], END)) for u in ids for _ in range(rng.randrange(0, 8))]
    if sms:
        conn.execute("insert into public.sms_logs (user_id, recipient, created_at)"
                     " select u, '+244900000001', t from unnest(%s::uuid[], %s::timestamptz[]) x(u, t)",
                     [[u for u, _ in sms], [t for _, t in sms]])
    for u in rng.sample(ids, len(ids) // 3):
        conn.execute("insert into public.campaigns (user_id, name, created_at) values (%s, 'c', %s)",
                     [u, random_time(rng, signed[u], END)])
    for u in rng.sample(ids, len(ids) // 3):
        done = random_time(rng, signed[u], END)
        jid = conn.execute("insert into public.contact_import_jobs (user_id) values (%s) returning id", [u]).fetchone()[0]
        conn.execute("update public.contact_import_jobs set status = 'completed', completed_at = %s where id = %s",
                     [done, jid])
    events = [(u, rng.choice(["opened_app", "viewed_pricing"]), random_time(rng, signed[u], END))
              for u in ids for _ in range(rng.randrange(0, 5))]
    if events:
        conn.execute("insert into public.business_events (user_id, event_name, occurred_at)"
                     " select * from unnest(%s::uuid[], %s::text[], %s::timestamptz[])",
                     [[e[0] for e in events], [e[1] for e in events], [e[2] for e in events]])
    return ids


def later_writes(db, rng: random.Random, ids: list) -> dict:
    """Writes after the rollups were read: a price change, a backfilled purchase in an old
    month, an approved request deleted, a refund, an earlier-dated SMS and event."""
    conn = db.conn
    conn.execute("update public.credit_prices set price_per_credit = price_per_credit + 1.2345"
                 " where id = (select min(id) from public.credit_prices)")
    conn.execute("insert into public.credit_prices (valid_from, price_per_credit) values (%s, 7.5)",
                 [datetime(2025, 9, 15, 12, tzinfo=timezone.utc)])
    u = rng.choice(ids)
    conn.execute("insert into public.credit_requests (user_id, amount, status, created_at, processed_at)"
                 " values (%s, 77, 'approved', %s, %s)",
                 [u, START - timedelta(days=3), START - timedelta(days=2)])
    before = dict(conn.execute("select user_id, first_at from smsao.user_milestones"
                               " where milestone = 'purchased_credits'").fetchall())
    gone = conn.execute("delete from public.credit_requests where id = (select id from public.credit_requests"
                        " where status = 'approved' order by processed_at desc limit 1) returning user_id").fetchone()[0]
    conn.execute("insert into public.credit_transactions (user_id, amount, kind, created_at) values (%s, 3, 'refund', %s)",
                 [u, datetime(2026, 2, 28, 23, 59, 59, tzinfo=timezone.utc)])
    conn.execute("insert into public.sms_logs (user_id, recipient, created_at) values (%s, '+244900000002', %s)",
                 [u, START - timedelta(days=40)])
    conn.execute("insert into public.business_events (user_id, event_name, occurred_at) values (%s, 'opened_app', %s)",
                 [u, START - timedelta(days=1)])
    # The deleted purchase may have been its buyer's first: the milestone stays.
    return {("purchased_credits", gone): before[gone]}


def assert_exact(db, kept: dict | None = None) -> None:
    recount = Recount(db.conn, kept)
    got = db.as_(SERVICE, "select * from public.business_metrics(%s, %s)", [FROM, TO])
    cols = ["month", "revenue", "mrr", "paying_customers", "new_paying_customers", "churned_customers",
            "arppu", "cac", "ltv", "acquisition_spend"]
    expected = recount.months(FROM, TO)
    assert len(got) == len(expected)
    # The history is not trivial: every figure moves somewhere.
    for col in ("revenue", "mrr", "churned_customers", "new_paying_customers", "cac"):
        assert any(r[col] for r in expected), col
    for row, want in zip(got, expected):
        assert dict(zip(cols, row)) == want, row[0]
    # A range that starts late still counts LTV over every earlier month.
    late = db.as_(SERVICE, "select month, ltv from public.business_metrics('2026-03-01', '2026-04-01')")
    assert late == [(r["month"], r["ltv"]) for r in expected if date(2026, 3, 1) <= r["month"] <= date(2026, 4, 1)]

    since, until = datetime(2025, 3, 1, tzinfo=timezone.utc), datetime(2025, 12, 1, tzinfo=timezone.utc)
    for steps, within in ((["signed_up", "opened_app", "purchased_credits", "sent_sms"], timedelta(days=60)),
                          (["opened_app", "viewed_pricing", "purchased_credits"], timedelta(days=30)),
                          (["signed_up", "requested_credits", "purchased_credits", "created_campaign",
                            "imported_contacts"], timedelta(days=400)),
                          (["viewed_pricing", "viewed_pricing"], timedelta(days=90))):
        got = db.as_(SERVICE, "select * from public.conversion_funnel(%s, %s, %s, %s)", [steps, since, until, within])
        assert got == recount.funnel(steps, since, until, within), steps
        assert got[0][2] > 0, steps

    got = db.as_(SERVICE, "select * from public.retention_cohorts('2025-01-01', '2026-06-01')")
    assert got == recount.cohorts(date(2025, 1, 1), date(2026, 6, 1))

    stored = {(m, u): t for m, u, t in db.sql("select milestone, user_id, first_at from smsao.user_milestones")}
    # signed_up is profiles.created_at itself: no stored row.
    assert stored == {(m, u): t for m in MILESTONES if m != "signed_up" for u, t in recount.milestones[m].items()}
    days = dict(((d, e), n) for d, e, n in db.sql(
        "select day, event_name, sum(events)::int from smsao.event_counts group by 1, 2 having sum(events) <> 0"))
    assert days == recount.event_days()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_analytics_equal_an_independent_recount(db, seed):
    rng = random.Random(seed)
    ids = load_history(db, rng, users=40)
    assert_exact(db)
    kept = later_writes(db, rng, ids)
    assert_exact(db, kept)
