#!/usr/bin/env python3
"""What a pg_auto_failover formation costs and what it buys (issue 17), in one run:

    .venv/bin/python bench/ha_bench.py [--seconds 5] [--clients 4] [--drills 5] [--only limiter,rpc,drills]

It builds a local formation (runner/ha/formation.py: monitor, primary, synchronous
secondary, all on this machine) and a single embedded server (runner.embedded.Cluster),
both with durability on (fsync, synchronous_commit = on), migrates both, and measures:

- limiter: admissions per second of public.enhanced_security_rate_limit, called as the app
  calls it (PostgREST-shaped transaction as `authenticated`, a different caller each call so
  that every call admits), with the limiter's state tables UNLOGGED (as released) and LOGGED
  (`alter table ... set logged`), on the formation and on the single server.
- rpc: request_credits + approve_credit_request pairs per second through the app's roles
  (the failover drill's client loop), formation against single server.
- drills: `--drills` kill -9 failover drills (runner/ha/drill.py) under write load: the time
  to the first write on the new primary and the acknowledged commits lost (median, max).

Clients are Python threads over psycopg; ratios within one run are what count."""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runner import migrate, schedule  # noqa: E402
from runner.embedded import Cluster  # noqa: E402
from runner.ha import drill  # noqa: E402
from runner.ha.formation import Formation  # noqa: E402
from runner.request import Caller, request  # noqa: E402

LIMITER_TABLES = ("smsao.rate_limit_keys", "smsao.rate_limit_hits")


def make_users(url: str, n: int) -> list[uuid.UUID]:
    users = [uuid.uuid4() for _ in range(n)]
    with psycopg.connect(url) as conn:
        conn.execute("insert into auth.users (id, email) select u, u::text || '@bench.invalid' "
                     "from unnest(%s::uuid[]) u", [users])
        conn.execute("update public.profiles set status = 'active' where user_id = any(%s)", [users])
    return users


def set_limiter_logged(url: str, logged: bool) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in LIMITER_TABLES:
            conn.execute(f"alter table {table} set {'logged' if logged else 'unlogged'}")


def admissions_per_s(url: str, clients: int, seconds: float, users: list[uuid.UUID]) -> float:
    """Calls per second, every call admitted (checked)."""
    per = len(users) // clients
    counts = [0] * clients
    refused = [0] * clients
    deadline = time.monotonic() + seconds

    def work(i: int) -> None:
        mine = users[i * per:(i + 1) * per]
        with psycopg.connect(url) as conn:
            k = 0
            while time.monotonic() < deadline:
                ok = request(conn, Caller.user(mine[k % len(mine)]),
                             "select public.enhanced_security_rate_limit('bench_admission', 10000, 60)")[0][0]
                counts[i] += 1
                refused[i] += not ok
                k += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if sum(refused):
        raise SystemExit(f"the limiter refused {sum(refused)} calls: the bench must only admit")
    return sum(counts) / (time.monotonic() - started)


def rpc_pairs_per_s(url: str, clients: int, seconds: float) -> float:
    ops = 100_000
    callers = drill._prepare_callers(url, clients, min(ops, int(seconds * 400)))
    stop = threading.Event()
    started = time.monotonic()
    workers = [drill.Client(url, users, admins, len(users) * drill.REQUESTS_PER_USER, started + seconds, stop)
               for users, admins in callers]
    threads = [threading.Thread(target=w.run) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    errors = sum(sum(w.errors.values()) for w in workers)
    if errors:
        print(f"  ({errors} calls ended in an error)")
    return sum(1 for w in workers for a in w.acks if a.kind == "approval") / elapsed


def table(title: str, header: tuple, rows: list[tuple]) -> None:
    print(f"\n{title}")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  " + "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(row, widths))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--drills", type=int, default=5)
    ap.add_argument("--only", default="limiter,rpc,drills")
    args = ap.parse_args()
    parts = set(args.only.split(","))

    base = Path(tempfile.mkdtemp(prefix="smsao-habench-"))
    base.chmod(0o755)  # the postgres OS user runs the servers
    formation = Formation(home=base / "ha")
    single = Cluster(home=base / "single", settings={"shared_buffers": "'128MB'"})
    try:
        t0 = time.monotonic()
        formation.create(log=lambda m: None)
        print(f"formation created in {time.monotonic() - t0:.1f} s")
        single.start()
        with psycopg.connect(single.url("postgres"), autocommit=True) as conn:
            conn.execute("create database smsao")
        targets = {"formation (sync standby)": formation.url(), "single server": single.url()}
        for url in targets.values():
            migrate.run("upgrade", url, "head")
        schedule.apply(formation.url())

        if "limiter" in parts:
            rows = []
            for name, url in targets.items():
                users = make_users(url, args.clients * 2000)
                figures = {}
                for logged in (False, True, False, True):  # interleaved: two rounds each
                    set_limiter_logged(url, logged)
                    figures.setdefault(logged, []).append(admissions_per_s(url, args.clients, args.seconds, users))
                set_limiter_logged(url, False)
                unlogged, logged = max(figures[False]), max(figures[True])
                rows.append((name, f"{unlogged:,.0f}", f"{logged:,.0f}", f"{logged / unlogged:.2f}"))
            table(f"limiter admissions per second ({args.clients} clients, best of 2 x {args.seconds:.0f} s)",
                  ("server", "UNLOGGED", "LOGGED", "LOGGED/UNLOGGED"), rows)

        if "rpc" in parts:
            rows = []
            figures = {name: rpc_pairs_per_s(url, args.clients, args.seconds) for name, url in targets.items()}
            single_rate = figures["single server"]
            for name, rate in figures.items():
                rows.append((name, f"{rate:,.0f}", f"{rate / single_rate:.2f}"))
            table(f"request_credits + approve_credit_request pairs per second ({args.clients} clients, "
                  f"{args.seconds:.0f} s)", ("server", "pairs/s", "vs single"), rows)

        if "drills" in parts and args.drills:
            single.stop()  # the drills have the machine to themselves
            firsts, lost, rejoins, resumed = [], [], [], []
            for i in range(args.drills):
                r = drill.run(clients=args.clients, ops_per_client=300, max_seconds=60, formation=formation)
                print(f"  drill {i + 1}: {r.old_primary} -> {r.new_primary}, first write after "
                      f"{r.first_write_after_kill_s} s, lost {r.lost_acknowledged_commits}, rejoin {r.rejoin_s} s, "
                      f"jobs resumed after {r.scheduler_resumed_after_s} s, problems: {r.problems or 'none'}")
                firsts.append(r.first_write_after_kill_s)
                lost.append(r.lost_acknowledged_commits)
                rejoins.append(r.rejoin_s)
                resumed.append(r.scheduler_resumed_after_s)

            def stat(xs):
                xs = [x for x in xs if x is not None]
                return (f"{statistics.median(xs):.2f}", f"{max(xs):.2f}") if xs else ("n/a", "n/a")
            table(f"kill -9 of the primary under load, {args.drills} drills",
                  ("figure", "median", "max"),
                  [("first write on the new primary (s)", *stat(firsts)),
                   ("acknowledged commits lost", *stat(lost)),
                   ("old primary back as standby (s)", *stat(rejoins)),
                   ("first pg_cron sample on the new primary (s)", *stat(resumed))])
    finally:
        formation.stop()
        single.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("SMSAO_CONNECT_TIMEOUT", "5")
    main()
