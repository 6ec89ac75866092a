#!/usr/bin/env python3
"""Throughput of public.enhanced_security_rate_limit against its floors and the naive design,
and of the guarded (audited) contacts table against an unguarded copy.

    .venv/bin/python bench/rate_limit_bench.py [--seconds 3] [--rounds 3] [--clients 8]

It starts a throwaway PostgreSQL (runner.embedded.Cluster in a temp dir), migrates a database
to head, creates 10,000 users with sessions, and drives every variant with pgbench custom
scripts over the same connections. Every call is one transaction made the way PostgREST makes
it: BEGIN; SET LOCAL ROLE authenticated; set_config('request.jwt.claims', ..., true); the call;
COMMIT. Ratios within one run are what count; absolute figures depend on the machine.

Server settings: fsync stays on (the default), synchronous_commit = off for every variant:
otherwise a refusal, which writes a logged audit row, would wait for a WAL flush that the
unlogged floor never waits for, and the figure would measure the disk, not the design.
"""
from __future__ import annotations

import argparse
import os
import resource
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from runner import migrate  # noqa: E402
from runner.embedded import Cluster, find_bindir  # noqa: E402

USERS = 10_000
HOT = 1                      # the user every connection uses in the hot-key runs
ADMIT_MAX = 60               # admitted calls: the contract's 60 a minute (admin_access, contacts)
# The stress runs (one key, the contract's largest limit) are bounded by a number of calls so
# that every call is admitted: 8 x 1,200 < 10,000 within the minute.
STRESS_MAX = 10_000
STRESS_CALLS_PER_CLIENT = 1_200

# Deterministic ids, so a pgbench script can name user :u without a lookup table.
UID = "'00000000-0000-4000-8000-' || lpad(({n})::text, 12, '0')"
SID = "'00000000-0000-4000-9000-' || lpad(({n})::text, 12, '0')"

SETUP_SQL = f"""
insert into auth.users (id, email)
  select ({UID.format(n='i')})::uuid, 'bench' || i || '@bench.ao' from generate_series(1, {USERS}) i;
insert into auth.sessions (id, user_id)
  select ({SID.format(n='i')})::uuid, ({UID.format(n='i')})::uuid from generate_series(1, {USERS}) i;

create schema bench;
grant usage on schema bench to authenticated;

-- (b) the floor of any stateful check: one single-row update of an UNLOGGED table keyed like
-- the limiter, with the same fillfactor (room for HOT updates).
create unlogged table bench.floor (
  caller_key text, operation_type text, n bigint not null default 0,
  primary key (caller_key, operation_type)
) with (fillfactor = 70);
insert into bench.floor (caller_key, operation_type)
  select 'user:' || ({UID.format(n='i')}), 'floor' from generate_series(1, {USERS}) i;
grant select, update on bench.floor to authenticated;
-- Rotating hot keys for admitted calls (see rotating()).
create sequence bench.rl_admit_hot;
create sequence bench.naive_admit_hot;
grant usage on sequence bench.rl_admit_hot, bench.naive_admit_hot to authenticated;

-- (c) the naive design: one row per admitted attempt, counted over the window before inserting.
-- UNLOGGED like the limiter's state, so the comparison is about the design, not the WAL. It
-- takes a transaction advisory lock on the key: without one it admits more than max_attempts
-- under concurrency, and the contract asks for exactness. Refusals count nothing and are
-- audited, as the contract says.
create unlogged table bench.naive_hits (caller_key text not null, operation_type text not null,
                                        at timestamptz not null);
create index on bench.naive_hits (caller_key, operation_type, at);

create function bench.naive_rate_limit(operation_type text, max_attempts integer, window_minutes integer)
  returns boolean
  language plpgsql security definer
  set search_path = ''
as $$
declare
  started timestamptz := pg_catalog.clock_timestamp();
  key     text;
  n       bigint;
begin
  if operation_type is null or operation_type !~ '^[a-z][a-z0-9_]{{0,62}}$' then
    raise exception 'operation_type' using errcode = '22023';
  end if;
  if max_attempts is null or max_attempts not between 1 and 10000 then
    raise exception 'max_attempts' using errcode = '22023';
  end if;
  if window_minutes is null or window_minutes not between 1 and 10080 then
    raise exception 'window_minutes' using errcode = '22023';
  end if;
  key := smsao.rate_limit_key();
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(key || '/' || operation_type, 0));
  select pg_catalog.count(*) into n from bench.naive_hits h
   where h.caller_key = key and h.operation_type = naive_rate_limit.operation_type
     and h.at > started - pg_catalog.make_interval(mins => window_minutes);
  if n >= max_attempts then
    perform smsao.audit_call('naive_rate_limit',
      pg_catalog.jsonb_build_object('operation_type', operation_type, 'max_attempts', max_attempts,
                                    'window_minutes', window_minutes, 'caller_key', key),
      'rate_limited', started);
    return false;
  end if;
  insert into bench.naive_hits values (key, operation_type, started);
  return true;
end
$$;
revoke all on function bench.naive_rate_limit(text, integer, integer) from public;
grant execute on function bench.naive_rate_limit(text, integer, integer) to authenticated;

-- The audited table's twin: same columns, constraints, indexes, foreign key, RLS policy,
-- grants and cache-invalidation trigger as public.contacts, without the statement-level
-- guard trigger (session validation + rate limit): the ratio is the guard's cost alone.
create table bench.contacts_plain (like public.contacts including defaults including constraints including indexes);
alter table bench.contacts_plain add foreign key (user_id) references public.profiles (user_id) on delete cascade;
alter table bench.contacts_plain enable row level security;
grant select, insert, update, delete on bench.contacts_plain to authenticated;
create policy contacts_own on bench.contacts_plain for all to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create trigger contacts_plain_cache_insert after insert on bench.contacts_plain
  referencing new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_insert('contacts:{{user_id}}', 'dashboard_stats:{{user_id}}');
"""

# Refused calls hit a key that is already full: 5 admitted in the last 60 minutes.
REFUSE_MAX, REFUSE_WINDOW = 5, 60


def prefill_state(conn, op: str, users: str, full: bool) -> None:
    """Steady state before a run: every key already has state, as it does in production
    between daily prunes (the floor's rows exist too). Full keys hold REFUSE_MAX hits inside
    the window; the others one hit that has left it (admitted 2 minutes ago)."""
    hits, at = (REFUSE_MAX, "now()") if full else (1, "now() - interval '2 minutes'")
    window = REFUSE_WINDOW if full else 1
    key = f"'user:' || ({UID.format(n='i')})"
    if op.startswith("naive"):
        conn.execute(f"insert into bench.naive_hits select {key}, '{op}', {at} "
                     f"from {users}, generate_series(1, {hits})")
    else:
        conn.execute(f"""
          insert into smsao.rate_limit_windows (caller_key, operation_type, hits, window_ends, retain_window)
            select {key}, '{op}', array_fill({at}, array[{hits}]),
                   {at} + make_interval(mins => {window}), make_interval(mins => {window})
            from {users}""")


def script(call: str, hot: bool) -> str:
    """One request exactly as PostgREST makes it, for user :u."""
    pick = f"\\set u {HOT}" if hot else f"\\set u random(1, {USERS})"
    # Built without a literal colon: pgbench would read ":4102444800" as a variable.
    claims = (f"json_build_object('role', 'authenticated', 'exp', 4102444800, "
              f"'sub', {UID.format(n=':u')}, 'session_id', {SID.format(n=':u')})::text")
    return "\n".join([
        pick,
        "\\set p random(1000000000000, 9999999999999)",   # a contact's phone, unique per user
        "BEGIN;",
        "SET LOCAL ROLE authenticated;",
        f"SELECT set_config('request.jwt.claims', {claims}, true);",
        call + ";",
        "END;",
    ]) + "\n"


@dataclass
class Variant:
    name: str
    call: str
    kind: str = ""            # "admit" | "refuse": expected answer, checked after the run
    op: str = ""              # operation_type whose state is prefilled (see prefill_state)
    bounded: bool = False     # stress runs: a fixed number of calls, see STRESS_*


def rl(op_sql: str, max_attempts: int, window: int) -> str:
    return f"SELECT public.enhanced_security_rate_limit({op_sql}, {max_attempts}, {window})"


def naive(op_sql: str, max_attempts: int, window: int) -> str:
    return f"SELECT bench.naive_rate_limit({op_sql}, {max_attempts}, {window})"


def rotating(prefix: str) -> str:
    """An operation name shared by every connection that moves on every ADMIT_MAX calls: one
    hot key at a time, each admitting all its calls at the realistic limit (a hot key that
    stays under its limit); the state of each is at most ADMIT_MAX hits, as in production."""
    return f"'{prefix}_' || (nextval('bench.{prefix}') / {ADMIT_MAX})"


def variants(hot: bool) -> list[Variant]:
    tag = "hot" if hot else "many"
    admit_rl = rotating("rl_admit_hot") if hot else "'rl_admit_many'"
    admit_naive = rotating("naive_admit_hot") if hot else "'naive_admit_many'"
    vs = [
        Variant("(a) SELECT 1", "SELECT 1"),
        Variant("(b) UNLOGGED 1-row update",
                "UPDATE bench.floor SET n = n + 1 WHERE caller_key = 'user:' || (SELECT auth.uid())"
                " AND operation_type = 'floor'"),
        Variant("(c) naive, admits", naive(admit_naive, ADMIT_MAX, 1), "admit",
                "" if hot else "naive_admit_many"),
        Variant("(c') naive, refuses", naive(f"'naive_refuse_{tag}'", REFUSE_MAX, REFUSE_WINDOW), "refuse",
                f"naive_refuse_{tag}"),
        Variant("(d) rate_limit, admits", rl(admit_rl, ADMIT_MAX, 1), "admit",
                "" if hot else "rl_admit_many"),
        Variant("(e) rate_limit, refuses", rl(f"'rl_refuse_{tag}'", REFUSE_MAX, REFUSE_WINDOW), "refuse",
                f"rl_refuse_{tag}"),
    ]
    if hot:
        # The worst case the contract allows: one key admitting up to 10,000 a minute keeps
        # up to 10,000 hits (the limiter rewrites them per call; the naive design counts them).
        vs += [
            Variant("(c*) naive, admits, max 10k", naive("'naive_stress'", STRESS_MAX, 1), "admit", bounded=True),
            Variant("(d*) rate_limit, admits, 10k", rl("'rl_stress'", STRESS_MAX, 1), "admit", bounded=True),
        ]
    return vs


WRITE_VARIANTS = [
    Variant("contacts INSERT, guarded", "INSERT INTO public.contacts (user_id, phone) "
            "VALUES ((SELECT auth.uid()), '+' || :p)", op="contact_operation"),
    Variant("copy without the guard", "INSERT INTO bench.contacts_plain (user_id, phone) "
            "VALUES ((SELECT auth.uid()), '+' || :p)"),
]


class Bench:
    def __init__(self, cluster: Cluster, dbname: str, clients: int, seconds: int, workdir: Path):
        self.cluster, self.dbname = cluster, dbname
        self.clients, self.seconds, self.workdir = clients, seconds, workdir
        self.pgbench = str(find_bindir() / "pgbench")
        self.conn = psycopg.connect(cluster.url(dbname), autocommit=True)
        self.prefilled: set[str] = set()
        self.postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])

    def cpu_seconds(self) -> float:
        """CPU used so far by exited backends (reaped by the postmaster: cutime + cstime of
        /proc/<postmaster>/stat) and by pgbench (this process's children)."""
        fields = Path(f"/proc/{self.postmaster}/stat").read_text().rsplit(")", 1)[1].split()
        server = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        client = resource.getrusage(resource.RUSAGE_CHILDREN)
        return server + client.ru_utime + client.ru_stime

    def wait_for_backends_to_exit(self) -> None:
        for _ in range(200):
            if self.conn.execute("select count(*) from pg_stat_activity where datname = current_database() "
                                 "and backend_type = 'client backend' and pid <> pg_backend_pid()").fetchone()[0] == 0:
                break
            time.sleep(0.01)
        time.sleep(0.05)  # and for the postmaster to reap them

    def audit_rows(self) -> int:
        return self.conn.execute("select count(*) from public.function_call_audit").fetchone()[0]

    def run(self, v: Variant, hot: bool) -> tuple[float, float]:
        """calls/s and CPU microseconds per call (server and pgbench) of one pgbench run, after
        checking that every call answered as expected."""
        if v.op and v.op not in self.prefilled:
            prefill_state(self.conn, v.op, f"(values ({HOT})) as v (i)" if hot else
                          f"generate_series(1, {USERS}) i", full=v.kind == "refuse")
            self.prefilled.add(v.op)
        path = self.workdir / "script.sql"
        path.write_text(script(v.call, hot))
        self.conn.execute("vacuum analyze")
        self.conn.execute("checkpoint")
        audited = self.audit_rows()
        cpu = self.cpu_seconds()
        limit = ["-t", str(STRESS_CALLS_PER_CLIENT)] if v.bounded else ["-T", str(self.seconds)]
        proc = subprocess.run(
            [self.pgbench, "-n", "-M", "prepared", "-c", str(self.clients), "-j", "2", *limit,
             "-f", str(path), "-h", "127.0.0.1", "-p", str(self.cluster.port), "-U", "postgres", self.dbname],
            capture_output=True, text=True, env={**os.environ, "PGPASSWORD": self.cluster.password})
        out = proc.stdout + proc.stderr
        tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
        calls = re.search(r"number of transactions actually processed: (\d+)", out)
        failed = re.search(r"number of failed transactions: (\d+)", out)
        if proc.returncode != 0 or not tps or not calls or (failed and int(failed.group(1))):
            raise SystemExit(f"pgbench failed for {v.name}:\n{out}")
        n = int(calls.group(1))
        self.wait_for_backends_to_exit()
        cpu_per_call = (self.cpu_seconds() - cpu) * 1e6 / n
        refusals = self.audit_rows() - audited
        expected = n if v.kind == "refuse" else 0
        if v.kind and refusals != expected:
            raise SystemExit(f"{v.name}: expected {expected} refusals, audit has {refusals}")
        return float(tps.group(1)), cpu_per_call


def ratio(x: float, base: float | None) -> str:
    return f"{x / base:5.2f}x" if base else "     -"


def b_key(hot: bool) -> str:
    return "(b) UNLOGGED 1-row update" + str(hot)


def spread(runs: list[float]) -> str:
    return f"{min(runs):.0f}-{max(runs):.0f}" if len(runs) > 1 else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=3, help="duration of each timed run (default 3)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="timed runs per variant, interleaved; the median is reported (default 3)")
    ap.add_argument("--clients", type=int, default=8, help="connections (default 8)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="smsao-bench-"))
    cluster = Cluster(home=home, cron_database="postgres", settings={
        "synchronous_commit": "off", "shared_buffers": "256MB", "max_connections": "50",
    })
    started = time.monotonic()
    try:
        cluster.start()
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as c:
            c.execute("create database bench")
        url = cluster.url("bench")
        migrate.run("upgrade", url, "head")
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(SETUP_SQL)
        bench = Bench(cluster, "bench", args.clients, args.seconds, home)

        # Every timed variant once per round, rounds interleaved, so that load from elsewhere
        # on the machine falls on all of them alike; the bounded stress runs go once, last.
        limiter = [(v, hot) for hot in (False, True) for v in variants(hot)]
        timed = [(v, hot) for v, hot in limiter if not v.bounded] + [(v, False) for v in WRITE_VARIANTS]
        runs: dict[str, list[float]] = {v.name + str(hot): [] for v, hot in limiter + timed}
        cpus: dict[str, list[float]] = {k: [] for k in runs}
        schedule = timed * args.rounds + [(v, hot) for v, hot in limiter if v.bounded]
        for v, hot in schedule:
            tps, cpu_per_call = bench.run(v, hot)
            runs[v.name + str(hot)].append(tps)
            cpus[v.name + str(hot)].append(cpu_per_call)
        median = {k: statistics.median(r) for k, r in runs.items()}
        cpu = {k: statistics.median(r) for k, r in cpus.items()}

        print(f"\nRate limiter, {args.clients} connections, one PostgREST-style transaction per call; "
              f"median of {args.rounds} interleaved runs of {args.seconds} s")
        print(f"admits: {ADMIT_MAX}/1 min (hot: the key moves on every {ADMIT_MAX} calls); refuses: a full key, "
              f"{REFUSE_MAX}/{REFUSE_WINDOW} min; *: one run of {args.clients} x {STRESS_CALLS_PER_CLIENT} calls "
              f"at {STRESS_MAX}/1 min")
        print("vs (c): each rate_limit row against the naive design doing the same thing "
              "((d)/(c), (e)/(c'), (d*)/(c*))")
        print("us/call: CPU per call, server and pgbench (steadier than calls/s on a busy machine); "
              "cpu vs (b): (b)'s us/call over the row's\n")
        header = (f"{'variant':<30} {'keys':>6} {'calls/s':>9} {'range':>12} {'vs (b)':>7} {'vs (c)':>7} "
                  f"{'us/call':>8} {'cpu vs (b)':>10}")
        print(header)
        print("-" * len(header))
        for hot in (False, True):
            base = {v.name[:4]: median[v.name + str(hot)] for v in variants(hot)}
            for v in variants(hot):
                tps = median[v.name + str(hot)]
                naive_peer = {"(d) ": "(c) ", "(e) ": "(c')", "(d*)": "(c*)"}.get(v.name[:4])
                k = v.name + str(hot)
                print(f"{v.name:<30} {'1' if hot else USERS:>6} {tps:9.0f} {spread(runs[k]):>12} "
                      f"{ratio(tps, base['(b) ']) if v.name[:4] not in ('(a) ', '(b) ') else '      -':>7} "
                      f"{ratio(tps, base[naive_peer]) if naive_peer else '      -':>7} {cpu[k]:8.0f} "
                      f"{ratio(cpu[b_key(hot)], cpu[k]) if v.name[:4] not in ('(a) ', '(b) ') else '      -':>10}")

        print(f"\nAudited table writes: single-row INSERTs as an authenticated user through RLS, "
              f"{USERS} users; median of {args.rounds} interleaved runs of {args.seconds} s")
        print("guarded: public.contacts, whose statement trigger validates the session and applies "
              "contact_operation (60/1 min)\n")
        header = (f"{'variant':<30} {'keys':>6} {'inserts/s':>9} {'range':>12} {'vs copy':>7} "
                  f"{'us/call':>8} {'cpu vs copy':>11}")
        print(header)
        print("-" * len(header))
        plain = median[WRITE_VARIANTS[1].name + "False"]
        for v in WRITE_VARIANTS:
            tps = median[v.name + "False"]
            k = v.name + "False"
            print(f"{v.name:<30} {USERS:>6} {tps:9.0f} {spread(runs[k]):>12} {ratio(tps, plain):>7} "
                  f"{cpu[k]:8.0f} {ratio(cpu[WRITE_VARIANTS[1].name + 'False'], cpu[k]):>11}")
        print(f"\ntotal {time.monotonic() - started:.0f} s")
        bench.conn.close()
    finally:
        cluster.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
