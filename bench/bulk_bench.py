#!/usr/bin/env python3
"""Bulk statements through the product's triggers against the trigger-free floor.

    .venv/bin/python bench/bulk_bench.py              # ~4-5 minutes on 2 cores
    .venv/bin/python bench/bulk_bench.py --sizes 1000,10000 --repeat 1   # a quick look

One scratch cluster (bench/common.py), migrated to head, preloaded through the product's
normal write path (bulk INSERT statements, triggers on) with 100,000 users and their
profiles and roles, 300,000 SMS logs of the last 24 hours, 200,000 OTPs and 100,000
contacts, so growth shows with data already present, as it does for a DBA importing into a
live database.

Then, for every table and operation of issue 10, one statement of N rows (10,000 and
100,000 by default), each in its own transaction that is rolled back (and the table
vacuumed), so every measurement starts from the same data:

  product  the statement as the product runs it: every trigger on (statement-level health
           counters, orphan accounting, ledger, cache NOTIFY, guards, foreign keys)
  floor    the same statement with the project's triggers off
           (SET LOCAL session_replication_role = replica; this also skips foreign-key
           checks, which are triggers too, so it is a strict floor). For signups the floor
           also writes the profiles and user_roles rows by hand in the same transaction,
           the rows the signup trigger writes.
  +hand    where an invariant needs more rows than the statement writes (a balance set
           directly needs its ledger rows; a ledger row moves its balance), the floor plus
           those writes done by hand, triggers still off: what any design must pay.
  +hand, keys  the same, with only the project's own triggers off (ALTER TABLE ... DISABLE
           TRIGGER USER, rolled back with the rest): the declared foreign keys are checked,
           as they are for any writer of these tables.

Columns: seconds (median of --repeat runs, product and floor interleaved), product/floor,
and growth (time at the largest N over time at the smallest) for product and floor. The
goal (issue 10): product <= 3x floor, and 10x the rows <= 12x the time.
Runs as a trusted writer (the superuser; contacts as service_role, the backend's loader),
so the app-role statement guards pass untouched, as they do for a loader.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from dataclasses import dataclass, field

import psycopg

from common import log, print_table, quiet_alembic, scratch_cluster

BASE_USERS = 100_000
BASE_SMS = 300_000
BASE_OTP = 200_000
BASE_CONTACTS = 100_000

# Baseline user i has id md5('u' || i)::uuid; bench.base maps i -> id for the statements below.
PRELOAD = [
    ("signups (100,000 users)",
     f"insert into auth.users (id, email) select md5('u' || i)::uuid, 'u' || i || '@bench.ao' "
     f"from generate_series(1, {BASE_USERS}) i"),
    ("sms_logs (300,000, last 24 h)",
     f"insert into public.sms_logs (user_id, recipient, message, status, created_at) "
     f"select md5('u' || (1 + i % {BASE_USERS}))::uuid, '+2449' || lpad(i::text, 8, '0'), 'Olá', "
     f"'delivered', now() - (i % 86000) * interval '1 second' from generate_series(1, {BASE_SMS}) i"),
    ("otp_codes (200,000)",
     f"insert into public.otp_codes (user_id, phone, code_hash, expires_at) "
     f"select case when i % 5 = 0 then null else md5('u' || (1 + i % {BASE_USERS}))::uuid end, "
     f"'+2449' || lpad(i::text, 8, '0'), md5(i::text), now() - (i % 86000) * interval '1 second' "
     f"from generate_series(1, {BASE_OTP}) i"),
    ("contacts (100,000)",
     f"insert into public.contacts (user_id, phone) "
     f"select md5('u' || i)::uuid, '+2448' || lpad(i::text, 8, '0') from generate_series(1, {BASE_CONTACTS}) i"),
]

SETUP = f"""
create schema bench;
create table bench.base (i int primary key, id uuid not null);
insert into bench.base select i, md5('u' || i)::uuid from generate_series(1, {BASE_USERS}) i;
analyze bench.base;
grant usage on schema bench to service_role;
grant select on bench.base to service_role;
"""


@dataclass
class Op:
    name: str
    tables: list[str]                    # vacuumed after each run
    product: list[str]                   # statements, {n} = rows
    floor: list[str] | None = None       # default: the product statements, triggers off
    hand: list[str] | None = None        # extra writes by hand for the +hand column
    role: str | None = None              # SET LOCAL ROLE for every variant
    max_rows: int | None = None          # skip sizes above (the table holds fewer rows)
    results: dict = field(default_factory=dict)


NEW_USERS = ("select md5('n' || i)::uuid as id, 'n' || i || '@bench.ao' as email "
             "from generate_series(1, {n}) i")

OPS = [
    Op("auth.users INSERT (signups)", ["auth.users", "public.profiles", "public.user_roles"],
       [f"insert into auth.users (id, email) {NEW_USERS}"],
       floor=[f"insert into auth.users (id, email) {NEW_USERS}",
              "insert into public.profiles (user_id, email) select md5('n' || i)::uuid, 'n' || i || '@bench.ao' "
              "from generate_series(1, {n}) i",
              "insert into public.user_roles (user_id, role) select md5('n' || i)::uuid, 'user' "
              "from generate_series(1, {n}) i"]),
    Op("profiles UPDATE credits+status", ["public.profiles", "public.credit_transactions"],
       ["update public.profiles p set credits = p.credits + 10, "
        "status = case when b.i % 50 = 0 then 'suspended' else p.status end "
        "from bench.base b where b.i <= {n} and p.user_id = b.id"],
       hand=["insert into public.credit_transactions (user_id, amount, kind) "
             "select b.id, 10, 'adjustment' from bench.base b where b.i <= {n}"],
       max_rows=BASE_USERS),
    Op("profiles UPDATE status only", ["public.profiles"],
       ["update public.profiles p set status = 'suspended' "
        "from bench.base b where b.i <= {n} and p.user_id = b.id"],
       max_rows=BASE_USERS),
    Op("contacts INSERT (loader)", ["public.contacts"],
       ["insert into public.contacts (user_id, phone) "
        "select b.id, '+2447' || lpad(b.i::text, 8, '0') from bench.base b where b.i <= {n}"],
       role="service_role", max_rows=BASE_USERS),
    Op("sms_logs INSERT", ["public.sms_logs"],
       ["insert into public.sms_logs (user_id, recipient, message, status) "
        f"select md5('u' || (1 + i % {BASE_USERS}))::uuid, '+2449' || lpad(i::text, 8, '0'), 'Olá', 'sent' "
        "from generate_series(1, {n}) i"]),
    Op("sms_logs UPDATE status", ["public.sms_logs"],
       ["update public.sms_logs set status = case when id % 16 = 0 then 'failed' else 'sent' end "
        "where id <= {n}"], max_rows=BASE_SMS),
    Op("sms_logs DELETE", ["public.sms_logs"],
       ["delete from public.sms_logs where id <= {n}"], max_rows=BASE_SMS),
    Op("otp_codes INSERT", ["public.otp_codes"],
       ["insert into public.otp_codes (user_id, phone, code_hash) "
        f"select md5('u' || (1 + i % {BASE_USERS}))::uuid, '+2446' || lpad(i::text, 8, '0'), md5(i::text) "
        "from generate_series(1, {n}) i"]),
    Op("otp_codes UPDATE (consume)", ["public.otp_codes"],
       ["update public.otp_codes set consumed_at = now(), attempts = attempts + 1 "
        "where ctid = any (array(select ctid from public.otp_codes order by expires_at limit {n}))"],
       max_rows=BASE_OTP),
    Op("otp_codes DELETE", ["public.otp_codes"],
       ["delete from public.otp_codes where ctid = any (array("
        "select ctid from public.otp_codes order by expires_at limit {n}))"], max_rows=BASE_OTP),
    Op("credit_transactions INSERT", ["public.credit_transactions", "public.profiles"],
       ["insert into public.credit_transactions (user_id, amount, kind) "
        "select b.id, 5, 'adjustment' from bench.base b where b.i <= {n}"],
       hand=["update public.profiles p set credits = p.credits + 5 "
             "from bench.base b where b.i <= {n} and p.user_id = b.id"],
       max_rows=BASE_USERS),
]


def run_once(conn: psycopg.Connection, op: Op, n: int, variant: str, timeout: int) -> float | None:
    """Seconds of the variant's statements in one transaction, then rolled back; None when
    they ran past `timeout` seconds (cancelled)."""
    stmts = op.product if variant == "product" else (op.floor or op.product)
    if variant in ("hand", "hand_keys"):
        stmts = stmts + op.hand
    conn.execute("begin")
    elapsed = None
    try:
        conn.execute(f"set local statement_timeout = '{timeout}s'")
        if variant == "hand_keys":
            for table in op.tables:
                conn.execute(f"alter table {table} disable trigger user")
        elif variant != "product":
            conn.execute("set local session_replication_role = replica")
        if op.role:
            conn.execute(f"set local role {op.role}")
        t0 = time.perf_counter()
        for s in stmts:
            conn.execute(s.format(n=n))
        elapsed = time.perf_counter() - t0
    except psycopg.errors.QueryCanceled:
        pass
    finally:
        conn.execute("rollback")
    # Dead versions of the rolled-back rows would make the next run walk them.
    conn.execute(f"vacuum {', '.join(op.tables)}")
    return elapsed


TIMEOUT = object()


def fmt_s(x) -> str:
    if x is TIMEOUT:
        return f"> {ARGS.timeout} s"
    return "-" if x is None else f"{x:.3f}"


def div(a, b):
    return None if a is None or b is None or a is TIMEOUT or b is TIMEOUT else a / b


def fmt_x(x: float | None, bound: bool = False) -> str:
    return (">" if bound else "") + ("-" if x is None else f"{x:.2f}x")


ARGS = argparse.Namespace(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000", help="rows per statement (default 10000,100000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant and size; median (default 3)")
    ap.add_argument("--with-sql", metavar="FILE",
                    help="SQL applied right after migrating (a proposed change), "
                         "measured against the same floors")
    ap.add_argument("--timeout", type=int, default=30,
                    help="seconds after which a statement is cancelled and reported as '> N s' (default 30)")
    args = ap.parse_args()
    ARGS.timeout = args.timeout
    sizes = [int(s) for s in args.sizes.split(",")]
    quiet_alembic()
    started = time.monotonic()
    preload_times = []
    with scratch_cluster() as url, psycopg.connect(url, autocommit=True) as conn:
        if args.with_sql:
            conn.execute(Path(args.with_sql).read_text())
            log(f"applied {args.with_sql}")
        conn.execute(SETUP)
        for label, sql in PRELOAD:
            t0 = time.perf_counter()
            conn.execute(sql)
            preload_times.append([label, f"{time.perf_counter() - t0:.2f}"])
            log(f"preloaded {label}")
        conn.execute("vacuum analyze")
        conn.execute("checkpoint")
        for op in OPS:
            for n in sizes:
                if op.max_rows and n > op.max_rows:
                    continue
                variants = ["product", "floor"] + (["hand", "hand_keys"] if op.hand else [])
                samples = {v: [] for v in variants}
                for _ in range(args.repeat):
                    for v in variants:            # interleaved: load elsewhere falls on all alike
                        samples[v].append(run_once(conn, op, n, v, args.timeout))
                    if None in samples["product"]:
                        break                     # past the timeout: once is enough to know
                op.results[n] = {v: TIMEOUT if None in s else statistics.median(s) for v, s in samples.items()}
                log(f"{op.name} {n:,}: " + ", ".join(f"{v} {fmt_s(t)} s" for v, t in op.results[n].items()))
        # The invariants still hold after all that (everything was rolled back; this checks the
        # preload, which went through the triggers): live counters equal a recount.
        live = conn.execute("select metric, sum(value) from smsao.health_counters "
                            "where bucket = '-infinity' group by 1 order by 1").fetchall()
        recount = conn.execute("select smsao.recount_health_counters()").fetchone()[0]
        counters_ok = all(recount.get(m) == v for m, v in live)
        ledger_ok = conn.execute(
            "select not exists (select from public.profiles p where p.credits <> coalesce("
            "(select sum(t.amount) from public.credit_transactions t where t.user_id = p.user_id), 0))"
        ).fetchone()[0]

    print_table(["preload through the triggers", "s"], preload_times,
                title=f"Preload (one statement each, triggers on), {BASE_USERS:,} users")
    lo, hi = sizes[0], sizes[-1]
    rows = []
    for op in OPS:
        for n, r in op.results.items():
            over = r["product"] is TIMEOUT
            p = args.timeout if over else r["product"]
            ratio = div(p, r["floor"])
            hand = r.get("hand")
            rows.append([op.name, f"{n:,}", fmt_s(r["product"]), fmt_s(r["floor"]), fmt_x(ratio, over),
                         "yes" if ratio is not None and ratio <= 3 and not over else "NO",
                         fmt_s(hand), fmt_x(div(p, hand), over) if hand else "-",
                         fmt_s(r.get("hand_keys")), fmt_x(div(p, r["hand_keys"]), over) if hand else "-",
                         ("< " if over else "") + f"{n / p:,.0f}"])
    print_table(["table / operation", "rows", "product s", "floor s", "product/floor", "<= 3x",
                 "+hand s", "product/+hand", "+hand, keys s", "product/+hand, keys", "product rows/s"], rows,
                title=f"One statement of N rows, rolled back; median of {args.repeat}; "
                      "floor = triggers off (session_replication_role = replica)"
                      + (f"; with {args.with_sql}" if args.with_sql else ""))
    if len(sizes) > 1:
        growth = []
        for op in OPS:
            if lo in op.results and hi in op.results:
                over = op.results[hi]["product"] is TIMEOUT
                gp = div(args.timeout if over else op.results[hi]["product"], op.results[lo]["product"])
                gf = div(op.results[hi]["floor"], op.results[lo]["floor"])
                growth.append([op.name, fmt_x(gp, over), fmt_x(gf),
                               "yes" if gp is not None and gp <= 1.2 * hi / lo and not over else "NO"])
        print_table(["table / operation", f"product {hi // 1000}k/{lo // 1000}k", f"floor {hi // 1000}k/{lo // 1000}k",
                     f"<= {1.2 * hi / lo:.0f}x"], growth,
                    title=f"Growth: time for {hi:,} rows over time for {lo:,} ({hi // lo}x the rows)")
    print(f"\ncounters equal a recount after the preload: {'yes' if counters_ok else 'NO'}; "
          f"balances equal the ledger: {'yes' if ledger_ok else 'NO'}")
    print(f"total wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
