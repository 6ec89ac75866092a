"""Loading analytics history (users signed up in the past, purchases, refunds, SMS) and an
independent recount of CONTRACT section 7 in plain Python, for the exactness tests."""
from __future__ import annotations

import random
import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

MILESTONES = ("signed_up", "requested_credits", "purchased_credits", "sent_sms", "created_campaign",
              "imported_contacts")


def add_user(conn, created_at: datetime) -> uuid.UUID:
    """A user who signed up at `created_at`: the profile is written with that time (the
    auth.users row goes in with triggers off, so the signup trigger does not write one now)."""
    uid = uuid.uuid4()
    conn.execute("set session_replication_role = replica")
    try:
        conn.execute("insert into auth.users (id, email, created_at) values (%s, %s, %s)",
                     [uid, f"{uid}@test.ao", created_at])
    finally:
        conn.execute("set session_replication_role = origin")
    conn.execute("insert into public.profiles (user_id, email, created_at) values (%s, %s, %s)",
                 [uid, f"{uid}@test.ao", created_at])
    conn.execute("insert into public.user_roles (user_id, role) values (%s, 'user')", [uid])
    return uid


def month_of(t: datetime) -> date:
    t = t.astimezone(timezone.utc)
    return date(t.year, t.month, 1)


def add_months(m: date, k: int) -> date:
    y, mo = divmod(m.year * 12 + m.month - 1 + k, 12)
    return date(y, mo + 1, 1)


def cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def random_time(rng: random.Random, start: datetime, end: datetime) -> datetime:
    return start + timedelta(seconds=rng.randrange(int((end - start).total_seconds())))


class Recount:
    """Section 7's definitions over rows read straight from the base tables."""

    def __init__(self, conn, kept: dict | None = None):
        """kept: (milestone, user) -> time of milestones whose rows were deleted since: a
        milestone once reached stays reached (history is not undone by a deletion)."""
        self.prices = conn.execute("select valid_from, price_per_credit from public.credit_prices"
                                   " order by valid_from").fetchall()
        self.purchases = conn.execute("select user_id, amount, processed_at from public.credit_requests"
                                      " where status = 'approved'").fetchall()
        self.refunds = conn.execute("select amount, created_at from public.credit_transactions"
                                    " where kind = 'refund'").fetchall()
        self.spend = dict(conn.execute("select month, sum(amount) from public.acquisition_spend group by 1").fetchall())
        self.profiles = conn.execute("select user_id, created_at from public.profiles").fetchall()
        self.sms = conn.execute("select user_id, created_at from public.sms_logs").fetchall()
        self.events = conn.execute("select user_id, event_name, occurred_at from public.business_events").fetchall()
        firsts = {
            "signed_up": self.profiles,
            "requested_credits": conn.execute("select user_id, created_at from public.credit_requests").fetchall(),
            "purchased_credits": [(u, t) for u, _, t in self.purchases],
            "sent_sms": self.sms,
            "created_campaign": conn.execute("select user_id, created_at from public.campaigns").fetchall(),
            "imported_contacts": conn.execute(
                "select user_id, completed_at from public.contact_import_jobs"
                " where status = 'completed' and completed_at is not null").fetchall(),
        }
        self.milestones: dict[str, dict] = {}
        for name, rows in firsts.items():
            first: dict = {}
            for u, t in rows:
                if u not in first or t < first[u]:
                    first[u] = t
            self.milestones[name] = first
        for (name, u), t in (kept or {}).items():
            if u not in self.milestones[name] or t < self.milestones[name][u]:
                self.milestones[name][u] = t

    def price_at(self, t: datetime) -> Decimal:
        price = Decimal(0)
        for valid_from, p in self.prices:
            if valid_from <= t:
                price = p
        return price

    def months(self, from_month: date, to_month: date) -> list[dict]:
        revenue, buyer_revenue = defaultdict(Decimal), defaultdict(Decimal)
        buyers, first_purchase = defaultdict(set), {}
        for u, amount, t in self.purchases:
            m, r = month_of(t), cents(amount * self.price_at(t))
            revenue[m] += r
            buyer_revenue[(u, m)] += r
            buyers[m].add(u)
            first_purchase[u] = min(first_purchase.get(u, m), m)
        for amount, t in self.refunds:
            revenue[month_of(t)] -= cents(abs(amount) * self.price_at(t))
        out, m = [], from_month
        while m <= to_month:
            prev = add_months(m, -1)
            paying = len(buyers[m])
            new = sum(1 for u in buyers[m] if first_purchase[u] == m)
            spend = self.spend.get(m, Decimal(0))
            total = sum((v for k, v in revenue.items() if k <= m), Decimal(0))
            ever = sum(1 for f in first_purchase.values() if f <= m)
            out.append({
                "month": m, "revenue": revenue[m],
                "mrr": sum((buyer_revenue[(u, m)] for u in buyers[m] if u in buyers[prev]), Decimal(0)),
                "paying_customers": paying, "new_paying_customers": new,
                "churned_customers": len(buyers[prev] - buyers[m]),
                "arppu": cents(revenue[m] / paying) if paying else None,
                "cac": cents(spend / new) if new else None,
                "ltv": cents(total / ever) if ever else None,
                "acquisition_spend": spend,
            })
            m = add_months(m, 1)
        return out

    def step_time(self, name: str, user, after: datetime | None, since=None, until=None, deadline=None):
        """The user's earliest time for a step: in [since, until) for step 1, else at or after
        `after` and no later than `deadline`."""
        if name in MILESTONES:
            times = [self.milestones[name][user]] if user in self.milestones[name] else []
        else:
            times = [t for u, e, t in self.events if u == user and e == name]
        if since is not None:
            times = [t for t in times if since <= t < until]
        else:
            times = [t for t in times if after <= t <= deadline]
        return min(times) if times else None

    def funnel(self, steps: list[str], since: datetime, until: datetime, within: timedelta) -> list[tuple]:
        users = {u for u, _ in self.profiles} | {u for u, _, _ in self.events} | \
            {u for first in self.milestones.values() for u in first}
        reached = {}
        for u in users:
            t = self.step_time(steps[0], u, None, since, until)
            if t is not None:
                reached[u] = (t, t)
        counts = [len(reached)]
        for name in steps[1:]:
            nxt = {}
            for u, (t, start) in reached.items():
                t2 = self.step_time(name, u, t, deadline=start + within)
                if t2 is not None:
                    nxt[u] = (t2, start)
            reached = nxt
            counts.append(len(reached))

        def ratio(a, b):
            return (Decimal(a) / Decimal(b)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP) if b else None
        return [(i + 1, name, counts[i], ratio(counts[i], counts[0]), ratio(counts[i], counts[max(i - 1, 0)]))
                for i, name in enumerate(steps)]

    def cohorts(self, from_month: date, to_month: date) -> list[tuple]:
        members = defaultdict(set)
        for u, t in self.profiles:
            members[month_of(t)].add(u)
        active = defaultdict(set)
        for u, t in self.sms:
            active[month_of(t)].add(u)
        out, c = [], from_month
        while c <= to_month:
            k, m = 0, c
            while m <= to_month:
                out.append((c, k, len(members[c]), len(members[c] & active[m])))
                k, m = k + 1, add_months(m, 1)
            c = add_months(c, 1)
        return out

    def event_days(self) -> dict[tuple, int]:
        counts = defaultdict(int)
        for name, first in self.milestones.items():
            for t in first.values():
                counts[(t.astimezone(timezone.utc).date(), name)] += 1
        for _, e, t in self.events:
            counts[(t.astimezone(timezone.utc).date(), e)] += 1
        return dict(counts)


def add_sales(db) -> tuple[datetime, datetime, list[uuid.UUID]]:
    """Sales over two months at 2.5 a credit: three buyers of 100 credits last month, one of
    them again this month (40 credits), and that buyer's SMS this month. Returns the first
    instants of last month and this month (UTC) and the buyers."""
    this_month = datetime.now(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    db.sql("insert into public.credit_prices (valid_from, price_per_credit) values ('2020-01-01', 2.5)")
    buyers = [add_user(db.conn, last_month + timedelta(hours=i)) for i in range(3)]
    for u in buyers:
        db.sql("insert into public.credit_requests (user_id, amount, status, created_at, processed_at)"
               " values (%s, 100, 'approved', %s, %s)", [u, last_month + timedelta(days=1), last_month + timedelta(days=2)])
    db.sql("insert into public.credit_requests (user_id, amount, status, created_at, processed_at)"
           " values (%s, 40, 'approved', %s, %s)", [buyers[0], this_month, this_month])
    db.sql("insert into public.sms_logs (user_id, recipient, created_at) values (%s, '+244900000001', %s)",
           [buyers[0], this_month])
    return last_month, this_month, buyers
