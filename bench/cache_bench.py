"""What a cache hit costs: runner.cache against a bare dict and cachetools.TTLCache, same run.

    .venv/bin/python bench/cache_bench.py [--n 1000000]
    DATABASE_URL=... .venv/bin/python bench/cache_bench.py   # also: trigger cost per write

runner.cache adds a lock, per-entry TTL (TLRUCache) and statistics to a cachetools lookup;
the table shows what that costs per hit against the floor (a dict) and the plain library.
With DATABASE_URL (a migrated scratch database) it also times a 5,000-row contacts insert
with and without the cache_invalidation triggers, the write-side price of invalidation
(rolled back: the trigger work is timed, the one commit-time queue write is not)."""
from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit
import uuid

import cachetools
from rich.console import Console
from rich.table import Table

from runner.cache import Cache


def per_op_ns(stmt, n: int, repeat: int = 5) -> float:
    """Best of `repeat` runs of n calls, in ns per call (best = least disturbed by noise)."""
    return min(timeit.repeat(stmt, number=n, repeat=repeat)) / n * 1e9


def lookup_table(n: int) -> Table:
    keys = [f"profile:{uuid.uuid4()}" for _ in range(1000)]
    key = keys[500]
    plain = {k: {"credits": 1} for k in keys}
    ttl = cachetools.TTLCache(maxsize=10_000, ttl=300)
    ours = Cache()
    for k in keys:
        ttl[k] = plain[k]
        ours.set(k, plain[k])
    loader = lambda: None  # noqa: E731 - never called: every lookup below is a hit

    rows = [
        (r"dict\[key]  (floor)", lambda: plain[key]),
        ("dict.get(key)", lambda: plain.get(key)),
        (r"cachetools.TTLCache\[key]", lambda: ttl[key]),
        ("cachetools.TTLCache.get(key)", lambda: ttl.get(key)),
        ("runner.cache get(key)", lambda: ours.get(key)),
        ("runner.cache get_or_fetch(key, f)", lambda: ours.get_or_fetch(key, loader)),
    ]
    results = [(name, per_op_ns(fn, n)) for name, fn in rows]
    floor = results[0][1]
    ref = results[2][1]
    t = Table(title=f"cache hit cost ({n:,} lookups, best of 5)")
    t.add_column("lookup")
    t.add_column("ns / hit", justify="right")
    t.add_column(r"x dict\[key]", justify="right")
    t.add_column(r"x TTLCache\[key]", justify="right")
    for name, ns in results:
        t.add_row(name, f"{ns:,.0f}", f"{ns / floor:.1f}", f"{ns / ref:.2f}")
    return t


def trigger_table(url: str, rows: int = 5000, rounds: int = 5) -> Table:
    import psycopg
    from runner.db import libpq_url

    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        uid = uuid.uuid4()
        conn.execute("insert into auth.users (id, email) values (%s, %s)", [uid, f"{uid}@bench.ao"])
        insert = ("insert into public.contacts (user_id, phone) select %s, '+24491' || lpad(g::text, 7, '0') "
                  "from generate_series(1, %s) g")

        def timed(disable: bool) -> float:
            samples = []
            for _ in range(rounds):
                with conn.transaction(force_rollback=True):
                    if disable:
                        for op in ("insert", "update", "delete", "truncate"):
                            conn.execute(f"alter table public.contacts disable trigger contacts_cache_{op}")
                    t0 = time.perf_counter()
                    conn.execute(insert, [uid, rows])
                    samples.append(time.perf_counter() - t0)
            return statistics.median(samples) * 1000

        without = timed(True)
        with_ = timed(False)
        conn.execute("delete from auth.users where id = %s", [uid])
    t = Table(title=f"{rows:,}-row contacts insert (median of {rounds}, rolled back)")
    t.add_column("triggers")
    t.add_column("ms", justify="right")
    t.add_column("x without", justify="right")
    t.add_row("cache_invalidation disabled", f"{without:.1f}", "1.00")
    t.add_row("cache_invalidation enabled (1 NOTIFY)", f"{with_:.1f}", f"{with_ / without:.2f}")
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300_000, help="lookups per measurement")
    args = p.parse_args()
    console = Console()
    console.print(lookup_table(args.n))
    if os.environ.get("DATABASE_URL"):
        console.print(trigger_table(os.environ["DATABASE_URL"]))


if __name__ == "__main__":
    main()
