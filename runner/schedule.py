"""`smsao-db schedule`: the pg_cron jobs of CONTRACT section 4.

The job definitions live in the database (smsao.cron_jobs(), sql/functions/cron_jobs.sql),
next to the functions they call; this module only applies them. pg_cron lives in one
database per cluster (`cron.database_name`), so the jobs are written there with
cron.schedule_in_database / cron.alter_job, by name, for the connected user: applying
twice changes nothing.

A job that connects (pg_cron without background workers) stores its target when it is
scheduled: `cron.host` and the server's port then. A restart on another port, a restored
copy or a failover leaves it connecting to the wrong place, every run failing with
"connection failed". `apply` compares each job's stored target with what it should be now
and schedules it again where it is stale; `status` names a stale target."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timezone
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors
from psycopg.conninfo import make_conninfo

from runner.db import connect, first_line, libpq_url
from runner.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

NOTHING_SCHEDULED = "nothing is scheduled"


class NoCron(UserError):
    """pg_cron is not usable on this server: nothing is (or can be) scheduled."""


@dataclass(frozen=True)
class Job:
    jobname: str
    schedule: str
    command: str
    database: str  # where the command runs


@dataclass(frozen=True)
class CronSetup:
    target_db: str
    cron_db: str
    cron_url: str
    jobs: tuple[Job, ...] = ()


def where(conn: psycopg.Connection, url: str) -> CronSetup:
    """This database and pg_cron's (NoCron when the server does not load pg_cron)."""
    # pg_settings lists cron.* only when the library defined them (loaded at server
    # start); a bare placeholder in postgresql.conf does not count.
    row = conn.execute("select setting from pg_settings where name = 'cron.database_name'").fetchone()
    if not row or not row[0]:
        raise NoCron("pg_cron is not loaded on this server (it must be in shared_preload_libraries, "
                     "and its settings readable by this role): " + NOTHING_SCHEDULED)
    cron_db, target_db = row[0], conn.info.dbname
    cron_url = url if cron_db == target_db else make_conninfo(libpq_url(url), dbname=cron_db)
    return CronSetup(target_db, cron_db, cron_url)


def locate(url: str) -> CronSetup:
    """Which jobs this database wants, and where pg_cron is. NoCron when it is not usable."""
    with connect(url) as conn:
        setup = where(conn, url)
        try:
            rows = conn.execute("select jobname, schedule, command, runs_in from smsao.cron_jobs()").fetchall()
        except errors.UndefinedFunction:
            raise UserError("the job definitions (smsao.cron_jobs) are not installed in this database: "
                            "run `smsao-db migrate upgrade`") from None
        except errors.InsufficientPrivilege as exc:
            raise UserError(f"not allowed to read the job definitions (smsao.cron_jobs): {first_line(exc)}") from None
    jobs = tuple(Job(name, sched, cmd, setup.target_db if runs_in == "target" else setup.cron_db)
                 for name, sched, cmd, runs_in in rows)
    return replace(setup, jobs=jobs)


def cron_connection(setup: CronSetup, create: bool = False, **kwargs) -> psycopg.Connection:
    """A connection to pg_cron's database; with `create`, the extension is created there if
    the server preloads it but nobody has created it yet."""
    try:
        conn = connect(setup.cron_url, **kwargs)
    except UserError as exc:
        raise NoCron(f"cannot reach pg_cron's database '{setup.cron_db}': {exc}; {NOTHING_SCHEDULED} by this run") from None
    if not conn.execute("select exists (select from pg_extension where extname = 'pg_cron')").fetchone()[0]:
        if not create:
            conn.close()
            raise NoCron(f"pg_cron is loaded but not created in database '{setup.cron_db}' "
                         f"(`smsao-db schedule apply` creates it): {NOTHING_SCHEDULED}")
        _create_extension(conn, setup.cron_db)
    return conn


def _create_extension(conn: psycopg.Connection, cron_db: str) -> None:
    try:
        conn.execute("create extension if not exists pg_cron")
        conn.commit()
    except errors.InsufficientPrivilege as exc:
        role = conn.info.user
        conn.close()
        raise UserError(f"pg_cron is loaded but not created in database '{cron_db}', and role '{role}' lacks "
                        f"the privilege to create it ({first_line(exc)}: creating pg_cron needs a superuser); "
                        f"ask one to run `create extension pg_cron` in '{cron_db}'") from None


@dataclass(frozen=True)
class Stored:
    """A job as cron.job holds it."""
    jobid: int
    schedule: str
    command: str
    database: str
    active: bool
    target: tuple[str, int]  # (nodename, nodeport)


def _existing(conn: psycopg.Connection, names: list[str]) -> dict[str, Stored]:
    rows = conn.execute(
        "select jobname, jobid, schedule, command, database, active, nodename, nodeport from cron.job "
        "where jobname = any(%s) and username = current_user", [names]).fetchall()
    return {r[0]: Stored(r[1], r[2], r[3], r[4], r[5], (r[6], r[7])) for r in rows}


def expected_target(conn: psycopg.Connection) -> tuple[str, int] | None:
    """Where a newly scheduled job would connect (pg_cron stores `cron.host` and this
    server's port), or None when jobs run as background workers and connect nowhere."""
    bgw, host, port = conn.execute(
        "select current_setting('cron.use_background_workers', true), current_setting('cron.host', true), "
        "current_setting('port')::int").fetchone()
    return None if bgw == "on" else (host, port)


def stale(stored: Stored, expected: tuple[str, int] | None) -> str | None:
    """Why the stored target is wrong, or None."""
    if expected is None or stored.target == expected:
        return None
    (host, port), (host_now, port_now) = stored.target, expected
    if host == host_now:
        return f"port {port}, the server is on {port_now}"
    return f"{host}:{port}, the server is {host_now}:{port_now}"


def apply(url: str) -> list[tuple[str, str, str]]:
    """Create or update every job; returns (jobname, action, database) per job."""
    setup = locate(url)
    with cron_connection(setup, create=True) as conn:
        try:
            expected = expected_target(conn)
            existing = _existing(conn, [j.jobname for j in setup.jobs])
            results = [_apply_job(conn, job, existing.get(job.jobname), expected) for job in setup.jobs]
        except errors.InsufficientPrivilege as exc:
            raise UserError(f"not allowed to schedule pg_cron jobs in '{setup.cron_db}': {first_line(exc)}") from None
        conn.commit()
    record_state(url, setup, scheduled=True)
    record_first_look(url)
    return results


def _apply_job(conn: psycopg.Connection, job: Job, found: Stored | None,
               expected: tuple[str, int] | None) -> tuple[str, str, str]:
    """Create, repair or update one job; (jobname, what was done, database)."""
    schedule_it = "select cron.schedule_in_database(%s, %s, %s, %s)"
    params = [job.jobname, job.schedule, job.command, job.database]
    if found is None:
        conn.execute(schedule_it, params)
        return job.jobname, "created", job.database
    wrong_target = stale(found, expected)
    if wrong_target:
        # cron.alter_job cannot change the target: schedule the job again, so pg_cron
        # stores where this server is now.
        conn.execute("select cron.unschedule(%s::bigint)", [found.jobid])
        conn.execute(schedule_it, params)
        return job.jobname, f"repaired (its target was {wrong_target})", job.database
    if (found.schedule, found.command, found.database, found.active) == (
            job.schedule, job.command, job.database, True):
        return job.jobname, "unchanged", job.database
    conn.execute("select cron.alter_job(%s, %s, %s, %s, null, true)",
                 [found.jobid, job.schedule, job.command, job.database])
    moved = f" (was in database '{found.database}')" if found.database != job.database else ""
    return job.jobname, "updated" + moved, job.database


def record_first_look(url: str) -> None:
    """Store a health snapshot and a performance sample now (what the jobs then do every few
    minutes), so the dashboard and /metrics show a status at once, wherever jobs are applied."""
    with connect(url) as conn:
        conn.execute("select public.record_health_snapshot()")
        conn.execute("select public.record_performance_sample()")
        conn.commit()


def record_state(url: str, setup: CronSetup, scheduled: bool) -> None:
    """Tell the database whether its jobs are scheduled: where pg_cron lives in another
    database, this is how the health check's scheduler check knows they should run."""
    with connect(url) as conn:
        if conn.execute("select to_regprocedure('smsao.record_schedule_state(boolean, text)')").fetchone()[0]:
            conn.execute("select smsao.record_schedule_state(%s, %s)", [scheduled, setup.cron_db])


# This package's jobs, for the connected user (pg_cron job names are unique per user).
OURS = "jobname like 'smsao-%%' and username = current_user"


def remove(url: str) -> list[str]:
    """Unschedule this database's `smsao-*` jobs, and the shared ones in pg_cron's database
    (the cron-history job) once no other database has any. Reads only cron.job, so it works
    when the job definitions are gone too (after a downgrade)."""
    with connect(url) as conn:
        setup = where(conn, url)
    with cron_connection(setup) as conn:
        try:
            removed = _unschedule(conn, "database = %s", [setup.target_db])
            others = conn.execute(f"select exists (select from cron.job where {OURS} and database <> %s)",
                                  [setup.cron_db]).fetchone()[0]
            if removed and not others:
                removed += _unschedule(conn, "database = %s", [setup.cron_db])
        except errors.InsufficientPrivilege as exc:
            raise UserError(f"not allowed to unschedule pg_cron jobs in '{setup.cron_db}': {first_line(exc)}") from None
        conn.commit()
    record_state(url, setup, scheduled=False)
    return removed


def _unschedule(conn: psycopg.Connection, condition: str, params: list) -> list[str]:
    rows = conn.execute(f"select jobid, jobname from cron.job where {OURS} and {condition} order by jobid",
                        params).fetchall()
    for jobid, _ in rows:
        conn.execute("select cron.unschedule(%s::bigint)", [jobid])
    return [name for _, name in rows]


def remove_orphaned(url: str) -> list[str]:
    """After a downgrade: when the database no longer defines the jobs (smsao.cron_jobs() is
    gone with the functions they call), unschedule them; when it still defines some, unschedule
    this database's jobs it no longer lists (e.g. pg_partman's maintenance, below 0011_scale).
    Nothing, quietly, without pg_cron."""
    with connect(url) as conn:
        defined = None
        if conn.execute("select to_regprocedure('smsao.cron_jobs()') is not null").fetchone()[0]:
            defined = [r[0] for r in conn.execute("select jobname from smsao.cron_jobs()")]
    try:
        return remove(url) if defined is None else remove_undefined(url, defined)
    except NoCron:
        return []


def remove_undefined(url: str, defined: list[str]) -> list[str]:
    """Unschedule this database's `smsao-*` jobs whose names smsao.cron_jobs() no longer lists."""
    with connect(url) as conn:
        setup = where(conn, url)
    with cron_connection(setup) as conn:
        try:
            removed = _unschedule(conn, "database = %s and jobname <> all(%s)", [setup.target_db, defined])
        except errors.InsufficientPrivilege as exc:
            raise UserError(f"not allowed to unschedule pg_cron jobs in '{setup.cron_db}': {first_line(exc)}") from None
        conn.commit()
    return removed


@dataclass
class JobStatus:
    job: Job
    jobid: int | None
    scheduled_in: str | None
    active: bool | None
    stale_target: str | None = None
    last_start: object = None  # NULL when the run never connected
    last_status: str | None = None
    last_message: str | None = None
    failures_24h: int = 0
    runs_24h: int = 0

    @property
    def problem(self) -> str | None:
        if self.jobid is None:
            return "not scheduled"
        if self.scheduled_in != self.job.database:
            return f"runs in database '{self.scheduled_in}'"
        if not self.active:
            return "inactive"
        if self.stale_target:
            return f"stale target ({self.stale_target}): `schedule apply` repairs it"
        if self.last_status == "failed":
            return "last run failed"
        return None


# Runs of the last `%(hours)s` hours of one job. A run that never connected has neither a
# start nor an end time: it counts when it came after the newest run known to be older
# than the period (run ids grow with time), so a job failing since long ago keeps counting.
RECENT_RUNS = """
    select count(*), count(*) filter (where d.status = 'failed')
      from cron.job_run_details d
     where d.jobid = %(jobid)s
       and (coalesce(d.end_time, d.start_time) > now() - make_interval(hours => %(hours)s)
            or (d.start_time is null and d.end_time is null
                and d.runid > coalesce((select max(o.runid) from cron.job_run_details o
                                         where coalesce(o.end_time, o.start_time)
                                               <= now() - make_interval(hours => %(hours)s)), 0)))"""


def status(url: str) -> list[JobStatus]:
    """Each job with its last run and the failures of the last 24 hours."""
    setup = locate(url)
    with cron_connection(setup) as conn:
        expected = expected_target(conn)
        existing = _existing(conn, [j.jobname for j in setup.jobs])
        result = []
        for job in setup.jobs:
            found = existing.get(job.jobname)
            if found is None:
                result.append(JobStatus(job, None, None, None))
                continue
            st = JobStatus(job, found.jobid, found.database, found.active, stale(found, expected))
            last = conn.execute(
                "select start_time, status, return_message from cron.job_run_details "
                "where jobid = %s order by runid desc limit 1", [found.jobid]).fetchone()
            if last:
                st.last_start, st.last_status, st.last_message = last
            st.runs_24h, st.failures_24h = conn.execute(RECENT_RUNS, {"jobid": found.jobid, "hours": 24}).fetchone()
            result.append(st)
    return result


def render_jobs(jobs: list[JobStatus], console: Console, with_runs: bool) -> None:
    """`list`: where and when each job runs; `status`: its state, last run and failures."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("job", no_wrap=True)
    if with_runs:
        table.add_column("state", no_wrap=True)
        table.add_column("last run (UTC)", no_wrap=True)
        table.add_column("result")
        table.add_column("fail/run 24h", justify="right", no_wrap=True)
    else:
        table.add_column("schedule", no_wrap=True)
        table.add_column("database", no_wrap=True)
        table.add_column("state", no_wrap=True)
    for st in jobs:
        problem = st.problem
        state = f"[red]{problem}[/]" if problem else "[green]scheduled[/]"
        if not with_runs:
            table.add_row(st.job.jobname, st.job.schedule, st.scheduled_in or st.job.database, state)
        elif st.last_status is None:
            table.add_row(st.job.jobname, state, "-", "[dim]no run yet[/]", "0/0")
        else:
            colour = {"succeeded": "green", "failed": "red"}.get(st.last_status, "yellow")
            message = (st.last_message or "").strip().splitlines()
            detail = f": {message[0][:60]}" if st.last_status == "failed" and message else ""
            started = (f"{st.last_start.astimezone(timezone.utc):%Y-%m-%d %H:%M}" if st.last_start
                       else "never started")
            table.add_row(st.job.jobname, state, started,
                          f"[{colour}]{escape(st.last_status)}[/]{escape(detail)}", f"{st.failures_24h}/{st.runs_24h}")
    console.print(table)
