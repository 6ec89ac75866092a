"""`smsao-db schedule`: the pg_cron jobs of CONTRACT section 4.

The job definitions live in the database (smsao.cron_jobs(), sql/functions/cron_jobs.sql),
next to the functions they call; this module only applies them. pg_cron lives in one
database per cluster (`cron.database_name`), so the jobs are written there with
cron.schedule_in_database / cron.alter_job, by name, for the connected user: applying
twice changes nothing."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timezone
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors
from psycopg.conninfo import make_conninfo

from runner.db import connect, libpq_url
from runner.errors import UserError
from runner.health import first_line

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


def _existing(conn: psycopg.Connection, names: list[str]) -> dict[str, tuple]:
    rows = conn.execute(
        "select jobname, jobid, schedule, command, database, active from cron.job "
        "where jobname = any(%s) and username = current_user", [names]).fetchall()
    return {r[0]: r[1:] for r in rows}


def apply(url: str) -> list[tuple[str, str, str]]:
    """Create or update every job; returns (jobname, action, database) per job."""
    setup = locate(url)
    results = []
    with cron_connection(setup, create=True) as conn:
        try:
            existing = _existing(conn, [j.jobname for j in setup.jobs])
            for job in setup.jobs:
                found = existing.get(job.jobname)
                if found is None:
                    conn.execute("select cron.schedule_in_database(%s, %s, %s, %s)",
                                 [job.jobname, job.schedule, job.command, job.database])
                    results.append((job.jobname, "created", job.database))
                    continue
                jobid, schedule, command, database, active = found
                if (schedule, command, database, active) == (job.schedule, job.command, job.database, True):
                    results.append((job.jobname, "unchanged", job.database))
                    continue
                conn.execute("select cron.alter_job(%s, %s, %s, %s, null, true)",
                             [jobid, job.schedule, job.command, job.database])
                moved = f" (was in database '{database}')" if database != job.database else ""
                results.append((job.jobname, "updated" + moved, job.database))
        except errors.InsufficientPrivilege as exc:
            raise UserError(f"not allowed to schedule pg_cron jobs in '{setup.cron_db}': {first_line(exc)}") from None
        conn.commit()
    record_state(url, setup, scheduled=True)
    return results


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
    last_start: object = None
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
        if self.last_status == "failed":
            return "last run failed"
        return None


def status(url: str) -> list[JobStatus]:
    """Each job with its last run and the failures of the last 24 hours."""
    setup = locate(url)
    with cron_connection(setup) as conn:
        existing = _existing(conn, [j.jobname for j in setup.jobs])
        result = []
        for job in setup.jobs:
            found = existing.get(job.jobname)
            if found is None:
                result.append(JobStatus(job, None, None, None))
                continue
            jobid, _, _, database, active = found
            st = JobStatus(job, jobid, database, active)
            last = conn.execute(
                "select start_time, status, return_message from cron.job_run_details "
                "where jobid = %s order by runid desc limit 1", [jobid]).fetchone()
            if last:
                st.last_start, st.last_status, st.last_message = last
            st.runs_24h, st.failures_24h = conn.execute(
                "select count(*), count(*) filter (where status = 'failed') from cron.job_run_details "
                "where jobid = %s and start_time > now() - interval '24 hours'", [jobid]).fetchone()
            result.append(st)
    return result


def render_jobs(jobs: list[JobStatus], console: Console, with_runs: bool) -> None:
    """`list`: where and when each job runs; `status`: its state, last run and failures."""
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
            table.add_row(st.job.jobname, state, f"{st.last_start.astimezone(timezone.utc):%Y-%m-%d %H:%M}",
                          f"[{colour}]{st.last_status}[/]{detail}", f"{st.failures_24h}/{st.runs_24h}")
    console.print(table)
