"""pg_cron schedules: idempotent apply by name into pg_cron's database, status, removal,
one real run, and a server without pg_cron."""
import time
from pathlib import Path

import psycopg
import pytest

from cli_support import smsao_db
from conftest import CRON_DB
from runner import migrate, schedule
from monitoring_support import STARTED_LONG_AGO, add_config, wait_for_run
from runner.embedded import Cluster, free_port
from support import login_url, new_home, remove_new_home

# pg_partman's maintenance is a job where the server has pg_partman (revision 0011_scale
# installs it then); ./dev installs Debian's postgresql-15-partman.
PARTMAN = any(Path("/usr/share/postgresql").glob("*/extension/pg_partman.control"))
JOB_NAMES = ("smsao-health-check", "smsao-performance-check", "smsao-data-cleanup", "smsao-cron-history-cleanup") \
    + (("smsao-partman-maintenance",) if PARTMAN else ())
N_JOBS = len(JOB_NAMES)


@pytest.fixture
def cron(cluster):
    """A connection to pg_cron's database; our jobs are removed after the test."""
    with psycopg.connect(cluster.url(CRON_DB), autocommit=True) as conn:
        yield conn
        conn.execute("select cron.unschedule(jobid) from cron.job where jobname like 'smsao-%'")


def jobs(cron):
    return {name: (schedule_, database) for name, schedule_, database in
            cron.execute("select jobname, schedule, database from cron.job where jobname like 'smsao-%'")}


def dbname(url):
    return url.rsplit("/", 1)[1]


def test_apply_is_idempotent_by_job_name(db, cron):
    name = dbname(db.url)
    assert [a for _, a, _ in schedule.apply(db.url)] == ["created"] * N_JOBS
    assert jobs(cron) == {"smsao-health-check": ("*/5 * * * *", name),
                          "smsao-performance-check": ("* * * * *", name),
                          "smsao-data-cleanup": ("0 3 * * *", name),
                          "smsao-cron-history-cleanup": ("30 3 * * *", CRON_DB),
                          **({"smsao-partman-maintenance": ("45 2 * * *", name)} if PARTMAN else {})}
    assert [a for _, a, _ in schedule.apply(db.url)] == ["unchanged"] * N_JOBS
    # A job changed by hand is put back, and nothing is duplicated.
    cron.execute("select cron.alter_job(jobid, schedule => '0 * * * *', active => false) "
                 "from cron.job where jobname = 'smsao-health-check'")
    assert dict((n, a) for n, a, _ in schedule.apply(db.url))["smsao-health-check"] == "updated"
    assert jobs(cron)["smsao-health-check"] == ("*/5 * * * *", name)
    assert cron.execute("select count(*) from cron.job where jobname like 'smsao-%'").fetchone()[0] == N_JOBS
    assert db.sql("select jobs_scheduled, cron_database from smsao.scheduler_state") == [(True, CRON_DB)]
    assert sorted(schedule.remove(db.url)) == sorted(JOB_NAMES)
    assert jobs(cron) == {}
    assert db.sql("select jobs_scheduled from smsao.scheduler_state") == [(False,)]
    assert schedule.remove(db.url) == []


def test_apply_to_another_database_moves_the_jobs(db, cron, empty_db_url):
    migrate.run("upgrade", empty_db_url, "head")
    schedule.apply(db.url)
    moved = {n: a for n, a, _ in schedule.apply(empty_db_url)}
    assert moved["smsao-cron-history-cleanup"] == "unchanged"
    assert moved["smsao-health-check"] == f"updated (was in database '{dbname(db.url)}')"
    assert {d for n, (_, d) in jobs(cron).items() if n != "smsao-cron-history-cleanup"} == {dbname(empty_db_url)}
    assert schedule.remove(db.url) == []             # not this database's jobs any more
    assert len(schedule.remove(empty_db_url)) == N_JOBS


def test_status_shows_last_runs_and_failures(db, cron):
    schedule.apply(db.url)
    assert all(s.problem is None and s.last_status is None for s in schedule.status(db.url))
    jobid = cron.execute("select jobid from cron.job where jobname = 'smsao-health-check'").fetchone()[0]
    # Two runs as pg_cron records them: one succeeded, then one failed.
    cron.execute("insert into cron.job_run_details (jobid, runid, database, username, command, status, "
                 "return_message, start_time, end_time) values "
                 "(%s, nextval('cron.runid_seq'), %s, 'postgres', 'x', 'succeeded', '1 row', now() - interval '5 minutes', now()),"
                 "(%s, nextval('cron.runid_seq'), %s, 'postgres', 'x', 'failed', 'ERROR: boom', now(), now())",
                 [jobid, dbname(db.url), jobid, dbname(db.url)])
    health = {s.job.jobname: s for s in schedule.status(db.url)}["smsao-health-check"]
    assert (health.last_status, health.runs_24h, health.failures_24h) == ("failed", 2, 1)
    assert health.problem == "last run failed" and "boom" in health.last_message
    result = smsao_db("schedule", "status", url=db.url)
    assert result.returncode == 1 and "last run failed" in result.stdout
    cron.execute("delete from cron.job_run_details where jobid = %s", [jobid])


def test_a_real_pg_cron_run_succeeds(db, cron):
    """The one slow test: pg_cron runs the every-minute job in the test database."""
    schedule.apply(db.url)
    jobid = cron.execute("select jobid from cron.job where jobname = 'smsao-performance-check'").fetchone()[0]
    deadline = time.monotonic() + 75
    run = None
    while time.monotonic() < deadline and not run:
        time.sleep(1)
        run = cron.execute("select status, return_message from cron.job_run_details "
                           "where jobid = %s and status in ('succeeded', 'failed')", [jobid]).fetchone()
    assert run is not None and run[0] == "succeeded", run
    assert db.one("select count(*) from public.performance_samples") >= 1
    st = {s.job.jobname: s for s in schedule.status(db.url)}["smsao-performance-check"]
    assert st.last_status == "succeeded" and st.problem is None


@pytest.fixture(scope="module")
def plain_cluster():
    """A server without pg_cron in shared_preload_libraries (a placeholder setting stays)."""
    home = new_home("smsao-nocron-")
    c = Cluster(home=home, settings={"shared_preload_libraries": "''", "fsync": "off"})
    c.start()
    with psycopg.connect(c.url("postgres"), autocommit=True) as conn:
        conn.execute("create database smsao")
    yield c
    c.stop()
    remove_new_home(home)


def test_without_pg_cron_migrations_apply_and_nothing_is_scheduled(plain_cluster):
    url = plain_cluster.url("smsao")
    migrate.run("upgrade", url, "head")
    with pytest.raises(schedule.NoCron, match="nothing is scheduled"):
        schedule.apply(url)
    applied = smsao_db("schedule", "apply", url=url)
    assert applied.returncode == 1 and "pg_cron is not loaded" in applied.stderr
    listed = smsao_db("schedule", "list", url=url)
    assert listed.returncode == 0 and "nothing is scheduled" in listed.stdout
    assert smsao_db("health", url=url).returncode == 2        # no SMS gateway: critical, but known
    assert migrate.run("downgrade", url, "base") == []        # nothing to unschedule, quietly


def test_apply_creates_pg_cron_where_it_is_preloaded_but_not_created(cron_not_created):
    url = cron_not_created.url("smsao")
    migrate.run("upgrade", url, "head")
    with pytest.raises(schedule.NoCron, match="not created in database 'smsao'"):
        schedule.status(url)
    # A login that may not create it is told which privilege is missing, in one line.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create role smsao_cron_owner login password 'Owner-Pass-1' in role pg_read_all_settings")
        conn.execute("grant usage on schema smsao to smsao_cron_owner")
        conn.execute("grant execute on function smsao.cron_jobs() to smsao_cron_owner")
    try:
        denied = smsao_db("schedule", "apply", url=login_url(url, "smsao_cron_owner", "Owner-Pass-1"))
        assert denied.returncode == 1 and "Traceback" not in denied.stderr, denied.stderr
        assert len(denied.stderr.strip().splitlines()) == 1, denied.stderr
        assert "lacks the privilege to create it" in denied.stderr and "superuser" in denied.stderr
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("drop owned by smsao_cron_owner")
            conn.execute("drop role smsao_cron_owner")
    applied = smsao_db("schedule", "apply", url=url)
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.count(": created (runs in database 'smsao')") == N_JOBS
    with psycopg.connect(url) as conn:
        assert conn.execute("select count(*) from cron.job where jobname like 'smsao-%'").fetchone()[0] == N_JOBS


def test_a_downgrade_below_the_job_definitions_unschedules_the_jobs(db, cron):
    schedule.apply(db.url)
    # Down to a revision that still defines them: the jobs stay.
    # (pg_partman's job goes below 0011_scale, which installed pg_partman.)
    assert migrate.run("downgrade", db.url, "0003_monitoring") == (["smsao-partman-maintenance"] if PARTMAN else [])
    assert len(jobs(cron)) == 4
    removed = migrate.run("downgrade", db.url, "0002_security")
    assert sorted(removed) == sorted(JOB_NAMES[:4])
    assert jobs(cron) == {}
    migrate.run("upgrade", db.url, "head")
    assert [a for _, a, _ in schedule.apply(db.url)] == ["created"] * N_JOBS


def test_the_shared_job_stays_while_another_database_has_jobs(db, cron, empty_db_url):
    """Our per-database jobs moved to another database: a downgrade of the first one removes
    nothing, not even the shared cron-history job; the other's downgrade removes them all."""
    schedule.apply(db.url)
    migrate.run("upgrade", empty_db_url, "head")
    schedule.apply(empty_db_url)          # our per-database jobs move there
    assert migrate.run("downgrade", db.url, "base") == []
    assert len(jobs(cron)) == N_JOBS
    assert sorted(migrate.run("downgrade", empty_db_url, "base")) == sorted(JOB_NAMES)
    assert jobs(cron) == {}


@pytest.fixture(scope="module")
def connecting_cron():
    """A server given by URL whose pg_cron lives in the app's database and runs each job by
    connecting over libpq (no background workers): each job stores a host and a port."""
    home = new_home("smsao-connecting-cron-")
    c = Cluster(home=home, cron_database="smsao",
                settings={"cron.use_background_workers": "off", "fsync": "off", "synchronous_commit": "off"})
    c.start()
    with psycopg.connect(c.url("postgres"), autocommit=True) as conn:
        conn.execute("create database smsao")
    migrate.run("upgrade", c.url("smsao"), "head")
    yield c
    c.stop()
    remove_new_home(home)


def test_jobs_left_on_an_old_port_fail_are_counted_and_apply_repairs_them(connecting_cron):
    """The server moves to another port (a restart, a restored copy): every stored target is
    stale and every run fails without connecting. The health check counts those runs,
    `status` names the stale target, and `apply` schedules the jobs again where the server is."""
    c = connecting_cron
    url = c.url("smsao")
    created = schedule.apply(url)
    assert [a for _, a, _ in created] == ["created"] * N_JOBS
    with psycopg.connect(url, autocommit=True) as conn:
        # Applying stored a first snapshot and sample: a new dashboard is not "unknown".
        assert conn.execute("select (select count(*) from public.system_health_snapshots), "
                            "(select count(*) from public.performance_samples)").fetchone() == (1, 1)
        conn.execute("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('g', 's', true)")
        old_port = conn.execute("select distinct nodeport from cron.job").fetchall()
    assert old_port == [(c.port,)]

    c.stop()
    c._append_conf("test: the server moved to another port", {"port": str(free_port())})
    c.start()
    url = c.url("smsao")
    failed = wait_for_run(url, "smsao-performance-check", "failed", 0)
    assert failed[1] is None and "connection failed" in failed[2]          # it never started
    with psycopg.connect(url, autocommit=True) as conn:
        report = conn.execute("select public.production_system_health_check()").fetchone()[0]
    assert report["metrics"]["cron_failures_1h"] >= 1
    assert report["checks"]["cron_failures_1h"] != "ok" and "check_scheduler" in report["recommendations"]

    status = smsao_db("schedule", "status", url=url)
    assert status.returncode == 1 and "Traceback" not in status.stderr
    assert "stale target" in status.stdout and "never started" in status.stdout, status.stdout
    repaired = smsao_db("schedule", "apply", url=url)
    assert repaired.returncode == 0 and repaired.stdout.count("repaired") == N_JOBS, repaired.stdout
    assert smsao_db("schedule", "apply", url=url).stdout.count("unchanged") == N_JOBS
    wait_for_run(url, "smsao-performance-check", "succeeded", failed[0])
    assert all(s.problem in (None, "last run failed") for s in schedule.status(url))


JUST_STARTED = """create or replace function smsao.server_started_at() returns timestamptz
  language sql stable set search_path = '' as $$ select pg_catalog.now() - interval '30 seconds' $$"""


def scheduler_check(db) -> str:
    return db.one("select public.production_system_health_check()")["checks"]["health_snapshot_age_s"]


def test_downtime_and_jobs_applied_again_are_not_a_stopped_scheduler(db, cron):
    """`up` after the server was down for a while, and `remove` then `apply`, store a first
    snapshot: it must not be a critical one with an alert, as if the jobs had stopped."""
    add_config(db)
    schedule.apply(db.url)
    alerts = db.one("select count(*) from public.system_alerts")
    db.sql("update public.system_health_snapshots set checked_at = now() - interval '11 minutes'")
    db.sql("update smsao.scheduler_state set changed_at = now() - interval '1 day'")
    db.sql(JUST_STARTED)                                   # down for 11 minutes, started again
    assert db.one("select public.record_health_snapshot()")["system_status"] == "healthy"
    db.sql(STARTED_LONG_AGO)                               # running all along: the jobs stopped
    db.sql("update public.system_health_snapshots set checked_at = now() - interval '11 minutes'")
    assert scheduler_check(db) == "critical"
    schedule.remove(db.url)
    schedule.apply(db.url)                                 # applied again: a first look, healthy
    assert scheduler_check(db) == "ok"
    assert db.one("select count(*) from public.system_alerts where severity = 'critical'") == 0
    assert db.one("select count(*) from public.system_alerts") == alerts
def test_a_downgrade_below_0007_unschedules_the_backup_jobs_only(db, cron):
    """Issue 15, item 6: on a cluster `up` configured, the backup and drill jobs are applied
    with the others; a downgrade below the revision that defines them removes just those."""
    db.sql("select smsao.configure_scheduled_recovery('/srv/smsao/.smsao/pgbackrest/scheduled-recovery.sh')")
    schedule.apply(db.url)
    assert set(jobs(cron)) == set(JOB_NAMES) | {"smsao-backup", "smsao-restore-drill"}
    removed = sorted(migrate.run("downgrade", db.url, "0006_vitals"))
    # (pg_partman's maintenance goes too, below 0011_scale, where the server has pg_partman.)
    assert removed == sorted({"smsao-backup", "smsao-restore-drill"} | set(JOB_NAMES) - set(JOB_NAMES[:4]))
    assert set(jobs(cron)) == set(JOB_NAMES[:4])
