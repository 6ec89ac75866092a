"""Retention cleanup of 1M expired OTPs among 4M rows, against one plain DELETE.

    .venv/bin/python bench/cleanup_bench.py            # 4M OTPs, 1M of them expired > 2 h ago
    .venv/bin/python bench/cleanup_bench.py --scale 0.1

Durability stays on (fsync, synchronous_commit): commits cost what they cost. The OTPs
are laid out as a live table grows, oldest first; 75% belong to one of 100k users (so
the orphan counters' triggers have work to do), the rest to bare phone numbers. The same
rows are deleted three ways, restoring them in between:
  plain DELETE                       one statement, one transaction (same triggers fire)
  public.production_data_cleanup()   the contract's function: batches of 5000, one transaction
  call smsao.run_data_cleanup()      the pg_cron path: batches of 5000, each committed
Meanwhile a writer inserts a fresh OTP every ~5 ms, one transaction each, as the app
does; its latency while nothing else runs is the floor."""
from __future__ import annotations

import argparse
import threading
import time

import psycopg

from common import log, percentile_ms, print_table, quiet_alembic, scratch_cluster

USERS = 100_000


def add_otps(conn: psycopg.Connection, first: int, last: int, total: int, expired: int) -> None:
    """OTP number g (1 = oldest); the first `expired` ones expired more than 2 h ago."""
    conn.execute("""
      insert into public.otp_codes (user_id, phone, code_hash, purpose, expires_at, created_at)
      select case when g %% 4 = 0 then null else md5('u' || (1 + g %% %(users)s))::uuid end,
             '+2449' || lpad((g %% 100000000)::text, 8, '0'), md5(g::text), 'login', e.at, e.at - interval '10 minutes'
      from generate_series(%(first)s::bigint, %(last)s::bigint) g
      cross join lateral (select case
          -- eligible: spread over the 30 days before the 2-hour cutoff
          when g <= %(expired)s then now() - interval '2 hours 1 minute' - interval '30 days' * (1 - g::float8 / %(expired)s)
          -- the rest: from 1 h 50 min ago to 10 minutes ahead, in order (a gap, so that no
          -- row crosses the 2-hour line while the benchmark runs)
          else now() - interval '110 minutes' + interval '120 minutes' * ((g - %(expired)s)::float8 / (%(total)s - %(expired)s))
        end as at) e""", {"users": USERS, "first": first, "last": last, "total": total, "expired": expired})


def prepare(url: str, total: int, expired: int, first: int = 1, last: int | None = None) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("set session_replication_role = replica")    # bulk load: triggers off
        last = last or total
        for start in range(first, last + 1, 1_000_000):
            add_otps(conn, start, min(last, start + 999_999), total, expired)
        conn.execute("set session_replication_role = origin")
        conn.execute("select smsao.recount_health_counters()")
        conn.execute("vacuum analyze public.otp_codes")
        conn.execute("checkpoint")


class Writer(threading.Thread):
    """Inserts one OTP per transaction every ~5 ms and records each latency."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float]] = []   # (start, seconds)
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            i = 0
            while not self.stop.is_set():
                i += 1
                t0 = time.perf_counter()
                conn.execute("insert into public.otp_codes (user_id, phone, code_hash, expires_at) values "
                             "(md5('u' || %s)::uuid, '+244923000000', 'fresh', now() + interval '10 minutes')",
                             [1 + i % USERS])
                self.samples.append((t0, time.perf_counter() - t0))
                time.sleep(0.005)

    def between(self, start: float, end: float) -> list[float]:
        return [d for t, d in self.samples if start <= t < end]


METHODS = {
    "plain DELETE": ("delete from public.otp_codes where expires_at < now() - interval '2 hours'", False),
    "production_data_cleanup()": ("select public.production_data_cleanup()", False),
    "call smsao.run_data_cleanup()": ("call smsao.run_data_cleanup()", True),
}


def run_once(url: str, writer: Writer, sql: str, autocommit: bool) -> tuple[int, float, list[float], bool]:
    """(rows deleted, seconds, writer latencies meanwhile, fresh rows all kept)."""
    with psycopg.connect(url, autocommit=True) as conn:
        eligible = "select count(*) from public.otp_codes where expires_at < now() - interval '2 hours'"
        fresh = "select count(*) from public.otp_codes where code_hash = 'fresh'"
        before, fresh_before = conn.execute(eligible).fetchone()[0], conn.execute(fresh).fetchone()[0]
        t0 = time.perf_counter()
        if autocommit:
            conn.execute(sql)
        else:
            with conn.transaction():
                conn.execute(sql)
        t1 = time.perf_counter()
        after, fresh_after = conn.execute(eligible).fetchone()[0], conn.execute(fresh).fetchone()[0]
    return before - after, t1 - t0, writer.between(t0, t1), fresh_after >= fresh_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of 4M OTPs / 1M expired")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each method (median reported)")
    args = parser.parse_args()
    quiet_alembic()
    total, expired = int(4_000_000 * args.scale), int(1_000_000 * args.scale)
    started = time.monotonic()
    with scratch_cluster() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("set session_replication_role = replica")
            conn.execute("insert into auth.users (id, email) select md5('u' || i)::uuid, 'u' || i || '@b.ao' "
                         "from generate_series(1, %s) i", [USERS])
            conn.execute("insert into public.profiles (user_id, email) select md5('u' || i)::uuid, 'u' || i || '@b.ao' "
                         "from generate_series(1, %s) i", [USERS])
        log(f"load {total:,} OTPs")
        prepare(url, total, expired)
        writer = Writer(url)
        writer.start()
        time.sleep(3)
        floor = writer.between(0, time.perf_counter())
        runs: dict[str, list[tuple[int, float, list[float], bool]]] = {name: [] for name in METHODS}
        first = True
        for round_ in range(args.rounds):
            for name, (sql, autocommit) in METHODS.items():
                if not first:
                    log("restore the expired OTPs")
                    prepare(url, total, expired, 1, expired)
                    time.sleep(1)
                first = False
                log(f"round {round_ + 1}: {name}")
                runs[name].append(run_once(url, writer, sql, autocommit))
        writer.stop.set()
        writer.join()

    def summary(name: str) -> list:
        results = sorted(runs[name], key=lambda r: r[1])
        deleted, seconds, during, kept = results[len(results) // 2]          # the median run
        latencies = [d for r in runs[name] for d in r[2]]                    # every run's writer
        return [name, f"{deleted:,}", " / ".join(f"{r[1]:.2f}" for r in runs[name]), f"{seconds:.2f}",
                f"{deleted / seconds:,.0f}", len(latencies), f"{percentile_ms(latencies, 50):.2f}",
                f"{percentile_ms(latencies, 99):.2f}", f"{max(latencies) * 1000:.1f}",
                "yes" if all(r[3] for r in runs[name]) else "NO"]

    rows = [summary(name) for name in METHODS]
    plain_rate = float(rows[0][4].replace(",", ""))
    for r in rows:
        r.insert(5, f"{float(r[4].replace(',', '')) / plain_rate:.2f}x")
    rows.insert(0, ["writer alone (floor)", "-", "-", "-", "-", "-", len(floor), f"{percentile_ms(floor, 50):.2f}",
                    f"{percentile_ms(floor, 99):.2f}", f"{max(floor) * 1000:.1f}", "-"])
    print_table(["method", "rows deleted", "seconds per run", "median s", "rows/s (median)", "vs plain DELETE",
                 "writer inserts", "writer p50 ms", "writer p99 ms", "writer max ms", "fresh rows kept"], rows,
                title=f"cleanup of {expired:,} expired OTPs among {total:,} (fsync on; {args.rounds} rounds, "
                      "methods interleaved; writer latencies over all rounds)")
    print(f"\ntotal wall time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
