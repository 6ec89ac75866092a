"""Audit trails in monthly partitions (issue 19, revisions 0011_scale and 0013_scale_speed): what a month's
retention costs as a partition DROP against the batched DELETE of the same number of rows,
and what partitioning costs the writers.

    .venv/bin/python bench/partition_bench.py              # 1M rows a month, ~3 minutes
    .venv/bin/python bench/partition_bench.py --rows 10000000 [--cold]

Starts its own cluster (bench/common.py), migrated to head. Retention: two months of
`function_call_audit` 30 and 31 months back, `--rows` each, loaded by one INSERT each (through
the parent, as the app writes), vacuumed. Then, side by side:
  drop     smsao.drop_expired_audit_partitions() for the older month: count, DETACH, DROP,
           with an audit writer beside it (single-row INSERTs: the longest shows how long the
           app waited; the DROP's files are removed after the commit has released the locks);
           before it, the same three steps timed one by one in a transaction rolled back
           (the count reads the month cold, so the function's own count then reads it warm);
           --cold: both months are first evicted from the OS page cache (and the dropped one
           again after the steps), as a month two years old is: the DROP's commit truncates its
           files, and for a month still in the cache the kernel frees every cached page then
  floor    the filesystem alone: files of the dropped month's sizes (heap and indexes, each
           segment), written beside the data directory and flushed, then unlinked: what any
           DROP of that month costs on this disk, whatever the database does
  batched  the same code path the retention used before partitions, for the other month:
           smsao.cleanup_batch() in batches of 5,000, each committed (as run_data_cleanup)
Inserts: the same rows into function_call_audit (partitioned, with its guards) and into
`bench.fca_plain`, an unpartitioned copy with the same columns, keys, indexes and triggers
as the released table: one bulk INSERT of `--insert-rows` rows, and `--single` single-row
INSERT statements (as each audited call writes one), interleaved, each rolled back, median
of `--repeat`. The partitioned table first gets the empty months of the last `--past-months`
(24), as a production table under the 2-year rule has them: routing a row costs more with
more partitions."""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

import psycopg

from common import log, print_table, quiet_alembic, scratch_cluster

PLAIN = """
create schema if not exists bench;
create table bench.fca_plain (
  id            bigint generated always as identity primary key,
  caller_id     uuid,
  caller_role   text,
  function_name text not null,
  arguments     jsonb not null default '{}'::jsonb,
  outcome       text not null check (outcome in ('ok', 'denied', 'rate_limited', 'error')),
  duration_ms   numeric(12, 3),
  created_at    timestamptz not null default now()
);
create index fca_plain_created_idx on bench.fca_plain (created_at);
create trigger fca_plain_append_only before update or delete or truncate on bench.fca_plain
  for each statement execute function smsao.forbid_audit_change();
"""

ROW = ("gen_random_uuid(), 'authenticated', 'request_credits', "
       "jsonb_build_object('amount', 100), 'ok', 1.25")


def month_start(conn, months_back: int):
    return conn.execute("select date_trunc('month', now(), 'UTC') - make_interval(months => %s)",
                        [months_back]).fetchone()[0]


def load_month(conn, months_back: int, rows: int) -> str:
    start = month_start(conn, months_back)
    name = f"function_call_audit_p{start:%Y_%m}"
    conn.execute(f"create table public.{name} partition of public.function_call_audit "
                 f"for values from ('{start.isoformat()}') to ('{start.isoformat()}'::timestamptz + interval '1 month')")
    # Spread over the month's first 27 days.
    conn.execute(f"insert into public.function_call_audit (caller_id, caller_role, function_name, arguments, "
                 f"outcome, duration_ms, created_at) select {ROW}, %s::timestamptz + g * (interval '27 days' / %s) "
                 f"from generate_series(1, %s) g", [start, rows, rows])
    conn.execute(f"vacuum analyze public.{name}")
    return name


class AuditWriter(threading.Thread):
    """The app meanwhile: single-row audit INSERTs one after another on a connection of its
    own; `longest` is the longest any of them took (a wait for the parent's lock shows here)."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.longest, self.writes = url, 0.0, 0
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                conn.execute("insert into public.function_call_audit (function_name, outcome) values ('bench', 'ok')")
                self.longest = max(self.longest, time.perf_counter() - t0)
                self.writes += 1

    def __enter__(self) -> "AuditWriter":
        self.start()
        time.sleep(0.2)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.2)
        self.stop.set()
        self.join()


def timed_drop(conn, url: str, months_back: int) -> dict:
    """smsao.drop_expired_audit_partitions (count, DETACH, DROP in one transaction, as the
    cleanup runs it), with an audit writer running beside it."""
    cutoff = month_start(conn, months_back - 1)
    with AuditWriter(url) as writer:
        t0 = time.perf_counter()
        conn.execute("begin")
        rows = conn.execute("select coalesce(sum(row_count), 0) from smsao.drop_expired_audit_partitions("
                            "'function_call_audit', %s)", [cutoff]).fetchone()[0]
        t1 = time.perf_counter()
        conn.execute("commit")    # the dropped files are removed here
        t2 = time.perf_counter()
    return {"rows": int(rows), "total": t2 - t0, "commit": t2 - t1,
            "longest_write": writer.longest, "writes": writer.writes}


def drop_steps(conn, months_back: int) -> dict[str, float]:
    """The drop's steps, each timed, in a transaction rolled back: the exact count (cold), the
    DETACH and the DROP (its files are unlinked at commit, which this leaves out)."""
    start = month_start(conn, months_back)
    name = f"public.function_call_audit_p{start:%Y_%m}"
    steps = {}
    conn.execute("begin")
    try:
        conn.execute("set local smsao.audit_retention = on")
        for step, sql in (("count", f"select count(*) from {name}"),
                          ("detach", f"alter table public.function_call_audit detach partition {name}"),
                          ("drop", f"drop table {name}")):
            t0 = time.perf_counter()
            conn.execute(sql)
            steps[step] = time.perf_counter() - t0
    finally:
        conn.execute("rollback")
    return steps


def evict(conn, table: str) -> int:
    """Drop a table's files (heap and indexes) from the OS page cache, as a month two years old
    is on a real server: after a checkpoint its pages are clean, and POSIX_FADV_DONTNEED lets the
    kernel forget them (only these files: nothing else on the machine is touched). Returns the
    bytes evicted."""
    data = Path(conn.execute("show data_directory").fetchone()[0])
    rels = conn.execute("select pg_relation_filepath(%s::regclass) union all "
                        "select pg_relation_filepath(indexrelid) from pg_index where indrelid = %s::regclass",
                        [table, table]).fetchall()
    evicted = 0
    for (rel,) in rels:
        for f in data.glob(rel + "*"):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                evicted += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return evicted


def relation_files(conn, table: str) -> list[Path]:
    """The files of a table and its indexes (every 1 GB segment)."""
    data = Path(conn.execute("show data_directory").fetchone()[0])
    rels = conn.execute("select pg_relation_filepath(%s::regclass) union all "
                        "select pg_relation_filepath(indexrelid) from pg_index where indrelid = %s::regclass",
                        [table, table]).fetchall()
    return [f for (rel,) in rels for f in data.glob(rel + "*")]


def timed_rm(sizes: list[int], beside: Path, cold: bool) -> float:
    """The filesystem's own floor for a DROP: files of the same sizes, written in the data
    directory's filesystem and flushed to disk (evicted from the page cache too with --cold),
    removed with unlink. Seconds the unlinks take."""
    folder = beside / "rm-floor"
    folder.mkdir()
    chunk = bytes(8 << 20)
    files = []
    for i, size in enumerate(sizes):
        path = folder / str(i)
        with open(path, "wb") as f:
            for _ in range(size // len(chunk)):
                f.write(chunk)
            f.write(bytes(size % len(chunk)))
            f.flush()
            os.fsync(f.fileno())
            if cold:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        files.append(path)
    t0 = time.perf_counter()
    for path in files:
        path.unlink()
    elapsed = time.perf_counter() - t0
    folder.rmdir()
    return elapsed


def past_months(conn, months: int) -> None:
    """Empty monthly partitions for the last `months` months (those the migration did not make)."""
    for back in range(1, months + 1):
        start = month_start(conn, back)
        conn.execute(f"create table if not exists public.function_call_audit_p{start:%Y_%m} partition of "
                     f"public.function_call_audit for values from ('{start.isoformat()}') "
                     f"to ('{start.isoformat()}'::timestamptz + interval '1 month')")


def timed_batches(conn, months_back: int) -> tuple[float, int]:
    start, cutoff = month_start(conn, months_back), month_start(conn, months_back - 1)
    resume, deleted = start, 0
    t0 = time.perf_counter()
    while True:
        conn.execute("set synchronous_commit = off")
        n, resume, finished = conn.execute(
            "select * from smsao.cleanup_batch('function_call_audit', %s, %s, 5000)", [cutoff, resume]).fetchone()
        deleted += n
        if finished:
            break
    return time.perf_counter() - t0, deleted


def timed_insert(conn, table: str, sql: str) -> float:
    conn.execute("begin")
    try:
        t0 = time.perf_counter()
        conn.execute(sql.format(table=table))
        return time.perf_counter() - t0
    finally:
        conn.execute("rollback")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows in each of the two months (default 1M)")
    ap.add_argument("--insert-rows", type=int, default=200_000, help="rows of the bulk INSERT (default 200k)")
    ap.add_argument("--single", type=int, default=20_000, help="single-row INSERTs (default 20k)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", action="store_true",
                    help="evict the two loaded months from the page cache before the retention, as months "
                         "two years old are (default: as loaded, in the cache)")
    ap.add_argument("--past-months", type=int, default=24,
                    help="empty monthly partitions made for the last N months before the inserts (default 24)")
    args = ap.parse_args()
    quiet_alembic()
    with scratch_cluster() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PLAIN)
        t0 = time.perf_counter()
        dropped_month = load_month(conn, 31, args.rows)
        deleted_month = load_month(conn, 30, args.rows)
        log(f"loaded 2 x {args.rows:,} rows in {time.perf_counter() - t0:.1f} s")
        conn.execute("checkpoint")
        if args.cold:
            gb = sum(evict(conn, f"public.{m}") for m in (dropped_month, deleted_month)) / 1e9
            log(f"evicted {gb:.2f} GB of the two months from the page cache")
        steps = drop_steps(conn, 31)
        log("drop steps, rolled back: " + ", ".join(f"{k} {v:.3f} s" for k, v in steps.items()))
        if args.cold:
            evict(conn, f"public.{dropped_month}")   # what the steps' count read, out again
        files = relation_files(conn, f"public.{dropped_month}")
        sizes, data_parent = [f.stat().st_size for f in files], files[0].parents[3]
        drop = timed_drop(conn, url, 31)
        drop_s, drop_rows = drop["total"], drop["rows"]
        log(f"dropped {dropped_month}: {drop_rows:,} rows in {drop_s:.3f} s")
        rm_s = timed_rm(sizes, data_parent, args.cold)
        log(f"floor: unlink of {len(sizes)} files, {sum(sizes) / 1e9:.2f} GB, in {rm_s:.3f} s")
        batch_s, batch_rows = timed_batches(conn, 30)
        log(f"batched delete of {deleted_month}: {batch_rows:,} rows in {batch_s:.1f} s")
        print_table(["retention of one month", "rows", "s", "rows/s", "vs drop"], [
            ["partition drop (count, detach, drop)", f"{drop_rows:,}", f"{drop_s:.3f}",
             f"{drop_rows / drop_s:,.0f}", "1x"],
            ["  of which its commit (the month's files removed)", "", f"{drop['commit']:.3f}", "", ""],
            [f"  an audit writer beside it: longest of {drop['writes']:,} INSERTs", "",
             f"{drop['longest_write']:.3f}", "", ""],
            ["  its steps alone: exact count (cold)", "", f"{steps['count']:.3f}", "", ""],
            ["  its steps alone: DETACH + DROP (no unlink)", "", f"{steps['detach'] + steps['drop']:.3f}", "", ""],
            [f"floor: the filesystem unlinking files of its size ({sum(sizes) / 1e9:.2f} GB)", "", f"{rm_s:.3f}", "",
             f"drop {drop_s / rm_s:.2f}x this"],
            ["batched delete (5,000 a batch, committed)", f"{batch_rows:,}", f"{batch_s:.2f}",
             f"{batch_rows / batch_s:,.0f}", f"{batch_s / drop_s:.0f}x slower"]],
            title="Retention (function_call_audit)")

        past_months(conn, args.past_months)
        parts = conn.execute("select count(*) from smsao.audit_partitions() "
                             "where parent = 'function_call_audit'").fetchone()[0]
        log(f"function_call_audit has {parts} partitions for the inserts")
        bulk = (f"insert into {{table}} (caller_id, caller_role, function_name, arguments, outcome, duration_ms) "
                f"select {ROW} from generate_series(1, {args.insert_rows})")
        single = (f"do $$ begin for i in 1..{args.single} loop insert into {{table}} (caller_id, caller_role, "
                  f"function_name, arguments, outcome, duration_ms) values ({ROW}); end loop; end $$")
        rows = []
        for label, sql, n in (("bulk INSERT", bulk, args.insert_rows), ("single-row INSERTs", single, args.single)):
            samples = {"public.function_call_audit": [], "bench.fca_plain": []}
            for _ in range(args.repeat):
                for table in samples:
                    samples[table].append(timed_insert(conn, table, sql))
            part, plain = (statistics.median(samples[t]) for t in samples)
            rows.append([label, f"{n:,}", f"{n / part:,.0f}", f"{n / plain:,.0f}", f"{plain / part:.2f}x"])
        print_table(["insert", "rows", "partitioned rows/s", "unpartitioned rows/s", "partitioned vs unpartitioned"],
                    rows, title="Insert throughput (median of %d, interleaved, rolled back)" % args.repeat)


if __name__ == "__main__":
    main()
