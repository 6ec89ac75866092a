#!/usr/bin/env python3
"""Business analytics (issue 18): the readers at scale, and what the analytics triggers cost
the product's bulk write paths.

    .venv/bin/python bench/analytics_bench.py                          # 1M users, 10M events
    .venv/bin/python bench/analytics_bench.py --users 100000 --events 1000000 --repeat 1

Part 1, one scratch cluster (bench/common.py) loaded through the product's triggers (one
statement per million rows): --users users signed up over 24 months, --funnel-users of
them in one month (the funnel's starting month), about 8% of users buying each month at a
price that changes once, refunds, --events custom events and one SMS per user. Then:

  business_metrics   24 months, rollup fresh (the state after any read); median of 20 calls
  after a purchase   the same call right after an approval (it recounts the current month)
  funnel 4 steps     signed_up -> opened_app -> requested_credits -> purchased_credits over
                     the funnel month (--funnel-users starting users), within 30 days
  recount floor      the 24 months counted straight from the base tables (what a reader
                     would pay without the rollup)

Part 2, a second scratch cluster preloaded as bench/bulk_bench.py does: every bulk
statement of bulk_bench, N rows in one statement rolled back, with the analytics triggers
enabled ("after") and disabled ("before", ALTER TABLE ... DISABLE TRIGGER on the
analytics triggers only, every other trigger on; for sms_logs, which records sent_sms from its
insert counter, the counter as released before the analytics), interleaved. Goal: after <=
1.2x before.

With --before REV (e.g. 0011_scale), part 1 loads at that revision, times the readers there
("before"), upgrades to head (timed: the migration backfills what head adds), and times them
again ("after"): both in one run, on the same data.

Part 2's "before" also drops the index on profiles (created_at) that revision 0012 added for
the funnel (not a trigger, but paid by every signup), re-created for "after".

Goals (issue 18): business_metrics < 20 ms; funnel < 1 s; bulk after/before <= 1.2x.
"""
from __future__ import annotations

import argparse
import statistics
import time

import psycopg

import bulk_bench
from common import log, median_ms, print_table, quiet_alembic, scratch_cluster
from runner import migrate  # common.py put the project on sys.path
from runner.resources import VERSIONS_DIR

MONTHS = 24
FIRST_MONTH = "2024-12-01"
FUNNEL_MONTH = "2026-06-01"

ANALYTICS_TRIGGERS = [
    ("public.profiles", "profiles_analytics_insert"),
    ("public.profiles", "profiles_analytics_delete"),
    ("public.campaigns", "campaigns_analytics_insert"),
    ("public.contact_import_jobs", "contact_import_jobs_analytics_insert"),
    ("public.contact_import_jobs", "contact_import_jobs_analytics_update"),
    ("public.credit_requests", "credit_requests_analytics_insert"),
    ("public.credit_requests", "credit_requests_analytics_update"),
    ("public.credit_requests", "credit_requests_analytics_delete"),
    ("public.credit_transactions", "credit_transactions_analytics_insert"),
    ("public.credit_transactions", "credit_transactions_analytics_update"),
    ("public.credit_transactions", "credit_transactions_analytics_delete"),
]


def signup_sql(users: int, funnel_users: int) -> str:
    """bench.signup(i): user i's signup time; the first funnel_users in the funnel month."""
    rest = users - funnel_users
    return f"""
create schema bench;
create function bench.signup(i bigint) returns timestamptz language sql immutable as $$
  select case when i <= {funnel_users}
              then '{FUNNEL_MONTH}'::timestamptz + (i * (2592000.0 / {funnel_users})) * interval '1 second'
              else '{FIRST_MONTH}'::timestamptz
                   + ((i - {funnel_users}) * (62208000.0 / {max(rest, 1)})) * interval '1 second' end
$$;
create function bench.uid(i bigint) returns uuid language sql immutable as $$ select md5('u' || i)::uuid $$;
"""


def load(conn: psycopg.Connection, users: int, events: int, chunk: int) -> list[list]:
    steps = []

    def step(label: str, sql: str, params=None) -> None:
        t0 = time.perf_counter()
        conn.execute(sql, params)
        steps.append([label, f"{time.perf_counter() - t0:.1f}"])
        log(f"loaded {label} ({steps[-1][1]} s)")

    for lo in range(1, users + 1, chunk):
        hi = min(users, lo + chunk - 1)
        conn.execute("set session_replication_role = replica")   # auth.users alone; profiles below
        conn.execute("insert into auth.users (id, email, created_at) select bench.uid(i), 'u' || i || '@bench.ao', "
                     "bench.signup(i) from generate_series(%s::bigint, %s) i", [lo, hi])
        conn.execute("set session_replication_role = origin")
        step(f"profiles {lo:,}..{hi:,}", "insert into public.profiles (user_id, email, created_at) "
             "select bench.uid(i), 'u' || i || '@bench.ao', bench.signup(i) from generate_series(%s::bigint, %s) i",
             [lo, hi])
    step("credit_prices (a change once)", "insert into public.credit_prices (valid_from, price_per_credit) "
         "values ('2020-01-01', 2.5), ('2025-09-01', 3.0)")
    step("acquisition_spend (3 channels)", "insert into public.acquisition_spend (month, channel, amount) "
         "select m, c, 1000 + (extract(month from m) * 37)::int % 500 "
         f"from generate_series('{FIRST_MONTH}'::date, '{FIRST_MONTH}'::date + interval '23 months', '1 month') m, "
         "unnest(array['facebook', 'google', 'radio']) c")
    # ~8% of users buy in a given month after signing up (hash-picked), approved 1 h later.
    for k in range(MONTHS):
        step(f"purchases month {k + 1}", f"""
            insert into public.credit_requests (user_id, amount, status, created_at, processed_at)
            select bench.uid(i), 50 + (i % 400)::int, 'approved', t, t + interval '1 hour'
            from (select i, ('{FIRST_MONTH}'::date + interval '{k} months')
                            + ((hashint8(i * 31 + {k}) & 2147483647) % 2500000) * interval '1 second' as t
                  from generate_series(1::bigint, {users}) i
                  where (hashint8(i * 17 + {k}) & 1023) < 82) x
            where t > bench.signup(i) + interval '1 hour'""")
    step("refunds (1 in 200 purchases)", "insert into public.credit_transactions (user_id, amount, kind, created_at) "
         "select r.user_id, 10, 'refund', r.processed_at + interval '2 days' from public.credit_requests r "
         "where (hashtext(r.id::text) & 255) = 0")
    step("sms_logs (one per user)", "insert into public.sms_logs (user_id, recipient, status, created_at) "
         "select bench.uid(i), '+244900000001', 'delivered', bench.signup(i) + interval '3 days' "
         f"from generate_series(1::bigint, {users}) i")
    for lo in range(1, events + 1, chunk):
        hi = min(events, lo + chunk - 1)
        step(f"business_events {lo:,}..{hi:,}", f"""
            insert into public.business_events (user_id, event_name, occurred_at)
            select bench.uid(u), (array['opened_app', 'viewed_pricing', 'clicked_buy'])[1 + k %% 3],
                   bench.signup(u) + ((k / {users}) * 3 + k %% 7) * interval '1 day' + interval '5 minutes'
            from (select k, 1 + k %% {users} as u from generate_series(%s::bigint, %s) k) x""", [lo - 1, hi - 1])
    t0 = time.perf_counter()
    conn.execute("select smsao.refresh_business_months()")
    steps.append(["first recount of all months", f"{time.perf_counter() - t0:.1f}"])
    conn.execute("vacuum analyze")
    return steps


def timings(conn: psycopg.Connection, sql: str, runs: int, params=None) -> list[float]:
    out = []
    for _ in range(runs):
        conn.execute("begin")
        conn.execute("set local role service_role")
        t0 = time.perf_counter()
        conn.execute(sql, params).fetchall()
        out.append(time.perf_counter() - t0)
        conn.execute("commit")
    return out


def readers(conn: psycopg.Connection, users: int) -> list[list]:
    last = f"('{FIRST_MONTH}'::date + interval '23 months')::date"
    metrics = f"select * from public.business_metrics('{FIRST_MONTH}', {last})"
    timings(conn, metrics, 2)
    rows = []
    t = timings(conn, metrics, 20)
    rows.append(["business_metrics, 24 months", f"{median_ms(t):.1f}", f"{max(t) * 1000:.1f}", "< 20 ms",
                 "yes" if median_ms(t) < 20 else "NO"])
    after = []
    for i in range(5):
        conn.execute("insert into public.credit_requests (user_id, amount, status, processed_at) "
                     f"values (bench.uid({i + 1}), 10, 'approved', {last} + interval '3 days')")
        after += timings(conn, metrics, 1)
    rows.append(["  right after a purchase (recounts 1 month)", f"{median_ms(after):.1f}",
                 f"{max(after) * 1000:.1f}", "-", "-"])
    t0 = time.perf_counter()
    conn.execute(f"select * from smsao.count_business_months('{FIRST_MONTH}', {last})").fetchall()
    rows.append(["  floor: 24 months recounted from base tables", f"{(time.perf_counter() - t0) * 1000:.0f}", "-",
                 "-", "-"])
    funnel = ("select * from public.conversion_funnel(array['signed_up', 'opened_app', 'requested_credits', "
              f"'purchased_credits'], '{FUNNEL_MONTH}', '{FUNNEL_MONTH}'::timestamptz + interval '1 month')")
    timings(conn, funnel, 1)
    t = timings(conn, funnel, 5)
    result = conn.execute(funnel.replace("select *", "select string_agg(users::text, ' > ' order by step)")).fetchone()[0]
    rows.append([f"funnel, 4 steps ({result})", f"{median_ms(t):.0f}", f"{max(t) * 1000:.0f}", "< 1000 ms",
                 "yes" if median_ms(t) < 1000 else "NO"])
    cohorts = f"select * from public.retention_cohorts(({last} - interval '11 months')::date, {last})"
    t = timings(conn, cohorts, 3)
    rows.append(["retention_cohorts, 12 months (no goal)", f"{median_ms(t):.0f}", f"{max(t) * 1000:.0f}", "-", "-"])
    return rows


# Indexes that issue 18 added to the product's tables (not triggers, but paid by their writes).
ANALYTICS_INDEXES = [("public.profiles_created_brin", "on public.profiles using brin (created_at)")]


# sent_sms has no trigger of its own: the sms_logs insert counter records it from its grouping
# (revision 0012). "Before" runs that counter as released before the analytics (0005_hardening).
COUNTER_WITH_ANALYTICS = ("smsao.count_sms_logs_insert", "0005_hardening", "sql/functions/health_counters.sql")


def released_function(name: str, revision: str, source: str) -> str:
    """The definition of one function as a revision froze it."""
    text = (VERSIONS_DIR / revision / "up.sql").read_text()
    section = text.split(f"-- ==== {source} ====\n", 1)[1].split("\n-- ==== ", 1)[0]
    start = section.index(f"create or replace function {name}(")
    return section[start:section.index("\n$$;", start) + 4]


def set_analytics(conn: psycopg.Connection, on: bool) -> None:
    name, revision, source = COUNTER_WITH_ANALYTICS
    if not hasattr(set_analytics, "head"):
        oid = conn.execute("select %s::regprocedure::oid", (name + "()",)).fetchone()[0]
        set_analytics.head = conn.execute("select pg_get_functiondef(%s)", (oid,)).fetchone()[0]
    conn.execute(set_analytics.head if on else released_function(name, revision, source))
    for table, trigger in ANALYTICS_TRIGGERS:
        conn.execute(f"alter table {table} {'enable' if on else 'disable'} trigger {trigger}")
    for name, definition in ANALYTICS_INDEXES:
        if on:
            conn.execute(f"create index if not exists {name.split('.')[1]} {definition}")
        else:
            conn.execute(f"drop index if exists {name}")


def bulk(sizes: list[int], repeat: int, timeout: int) -> list[list]:
    bulk_bench.ARGS.timeout = timeout
    rows = []
    with scratch_cluster() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(bulk_bench.SETUP)
        for label, sql in bulk_bench.PRELOAD:
            conn.execute(sql)
            log(f"bulk preload {label}")
        conn.execute("vacuum analyze")
        conn.execute("checkpoint")
        for op in bulk_bench.OPS:
            for n in sizes:
                if op.max_rows and n > op.max_rows:
                    continue
                samples = {"before": [], "after": []}
                for _ in range(repeat):
                    for variant in ("before", "after"):
                        set_analytics(conn, variant == "after")
                        samples[variant].append(bulk_bench.run_once(conn, op, n, "product", timeout))
                set_analytics(conn, True)
                if None in samples["before"] or None in samples["after"]:
                    rows.append([op.name, f"{n:,}", "timeout", "timeout", "-", "-"])
                    continue
                before, after = statistics.median(samples["before"]), statistics.median(samples["after"])
                rows.append([op.name, f"{n:,}", f"{before:.3f}", f"{after:.3f}", f"{after / before:.2f}x",
                             "yes" if after <= 1.2 * before else "NO"])
                log(f"bulk {op.name} {n:,}: before {before:.3f} s, after {after:.3f} s")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--funnel-users", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=1_000_000, help="rows per loading statement")
    ap.add_argument("--sizes", default="10000,100000", help="bulk statement sizes (default 10000,100000)")
    ap.add_argument("--repeat", type=int, default=3, help="bulk runs per variant and size; median")
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--skip-readers", action="store_true")
    ap.add_argument("--skip-bulk", action="store_true")
    ap.add_argument("--before", metavar="REV", help="load and time the readers at REV, then upgrade to head")
    args = ap.parse_args()
    quiet_alembic()
    started = time.monotonic()
    if not args.skip_readers:
        with scratch_cluster(revision=args.before or "head") as url, psycopg.connect(url, autocommit=True) as conn:
            conn.execute(signup_sql(args.users, args.funnel_users))
            steps = load(conn, args.users, args.events, args.chunk)
            sizes = conn.execute("select (select count(*) from public.profiles), "
                                 "(select count(*) from public.business_events), "
                                 "(select count(*) from public.credit_requests), "
                                 "(select count(*) from smsao.user_milestones)").fetchone()
            rows = readers(conn, args.users)
            if args.before:
                rows = [[f"[{args.before}] {r[0]}", *r[1:]] for r in rows]
                t0 = time.perf_counter()
                migrate.run("upgrade", url, "head")
                steps.append([f"upgrade {args.before} -> head", f"{time.perf_counter() - t0:.1f}"])
                log(f"upgraded to head ({steps[-1][1]} s)")
                conn.execute("vacuum analyze")
                rows += [[f"[head] {r[0]}", *r[1:]] for r in readers(conn, args.users)]
        print_table(["load step (through the triggers)", "s"], steps,
                    title=f"Load: {sizes[0]:,} users, {sizes[1]:,} events, {sizes[2]:,} purchases, "
                          f"{sizes[3]:,} milestones")
        print_table(["reader", "median ms", "max ms", "goal", "met"], rows,
                    title="Readers as service_role (each call also writes its admin_audit_logs row)")
    if not args.skip_bulk:
        sizes = [int(s) for s in args.sizes.split(",")]
        rows = bulk(sizes, args.repeat, args.timeout)
        print_table(["table / operation", "rows", "before s", "after s", "after/before", "<= 1.2x"], rows,
                    title=f"bench/bulk_bench.py statements, analytics triggers off (before) and on (after); "
                          f"median of {args.repeat}, rolled back")
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
