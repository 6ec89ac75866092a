"""Faults on a real embedded database, run by the installed wheel from a fresh directory
(issue 15): the scheduler runs after the first `up`, after `down` and `up`, after a pg_cron
run killed mid-way and after `kill -9` of the postmaster under write load, which loses no
commit a client saw acknowledged; `health` answers in one line when the connections are
exhausted, after connection_usage warned.

The server runs with the settings `smsao-db up` gives it, durable ones (fsync,
synchronous_commit and full_page_writes on): a crash test on the shared test cluster, which
turns them off, would prove nothing. pg_cron lives in the app's own database and runs its
jobs as background workers, as `up` sets it. The tests of this module run in order, on one
server; each wait for a pg_cron run is a wait for the next minute."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from runner.recovery import pgserver
from support import SERVICE, Caller, request

PERFORMANCE_JOB = "smsao-performance-check"
SLEEPER_JOB = "smsao-fault-sleeper"  # an smsao-* name: the health check counts its failures
FIGURES: dict[str, object] = {}  # printed at the end of the module (-s shows them)


class Project:
    """A project directory where the installed `smsao-db` runs (its data home is .smsao there)."""

    def __init__(self, venv: Path, directory: Path):
        self.smsao_db = venv / "bin" / "smsao-db"
        self.directory = directory
        self.env = {"PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(directory), "COLUMNS": "200",
                    "SMSAO_CONNECT_TIMEOUT": "5"}
        self._url = ""

    def cli(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(self.smsao_db), *args], capture_output=True, text=True, env=self.env,
                              cwd=self.directory, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"smsao-db {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc

    @property
    def url(self) -> str:
        """What `smsao-db url` prints (the same for the server's whole life, asked once)."""
        if not self._url:
            self._url = self.cli("url").stdout.strip()
        return self._url

    def sql(self, query: str, params=None):
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    def one(self, query: str, params=None):
        return self.sql(query, params)[0][0]

    def health(self) -> dict:
        return json.loads(self.cli("health", "--json", check=False).stdout)

    @property
    def postmaster_pid(self) -> int:
        return int((self.directory / ".smsao" / "pgdata" / "postmaster.pid").read_text().splitlines()[0])

    def wait_for_run(self, jobname: str, after: datetime, status: str = "succeeded", timeout: float = 100) -> datetime:
        """The start of the first run of `jobname` that began after `after` and ended in `status`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.sql("select min(d.start_time) from cron.job_run_details d join cron.job j using (jobid) "
                           "where j.jobname = %s and d.status = %s and d.start_time > %s",
                           [jobname, status, after])[0]
            if row[0]:
                return row[0]
            time.sleep(1)
        runs = self.sql("select j.jobname, d.status, d.start_time, d.return_message from cron.job_run_details d "
                        "join cron.job j using (jobid) order by d.runid desc limit 5")
        raise AssertionError(f"no {status} run of {jobname} after {after} within {timeout:.0f} s; last runs: {runs}")


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def project(installed_wheel):
    venv, _, _ = installed_wheel
    base = Path(tempfile.mkdtemp(prefix="smsao-faults-"))
    pgserver.give_to_owner(base, 0o711)  # the server's OS user must reach .smsao inside
    directory = base / "app"
    directory.mkdir(mode=0o711)
    p = Project(venv, directory)
    p.cli("up")
    p.started = now()
    yield p
    p.cli("down", check=False)
    subprocess.run(["rm", "-rf", str(base)])
    print("\nfault suite figures:", json.dumps(FIGURES, indent=1, default=str))


def test_the_server_is_durable_and_pg_cron_runs_in_the_app_database_without_connecting(project):
    settings = dict(project.sql("select name, setting from pg_settings where name in "
                                "('fsync', 'synchronous_commit', 'full_page_writes', 'cron.use_background_workers', "
                                "'cron.database_name')"))
    assert settings == {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on",
                        "cron.use_background_workers": "on", "cron.database_name": "smsao"}


def test_jobs_run_after_the_first_up(project):
    first = project.wait_for_run(PERFORMANCE_JOB, project.started)
    FIGURES["first run after up (s)"] = round((first - project.started).total_seconds(), 1)
    # pg_cron records a background worker's start_time when its launcher gets to it, which can
    # be after the job's own transaction began: the sample is dated from `up`, not from there.
    assert project.one("select count(*) from public.performance_samples where sampled_at >= %s",
                       [project.started]) >= 1


def test_a_job_run_killed_mid_way_is_a_failed_run_and_warns(project):
    # A job that sleeps while its flag is set: a run to kill mid-way. (Scheduled only now:
    # Debian's pg_cron 1.4 in background-worker mode waits for a running job before it
    # records or starts any other, pg_cron issue #200, fixed in 1.5.)
    project.sql("create schema fault_test; create table fault_test.sleep_flag (on_ boolean)")
    project.sql("insert into fault_test.sleep_flag values (true)")
    project.sql("select cron.schedule(%s, '* * * * *', "
                "'select pg_sleep(case when exists (select from fault_test.sleep_flag) then 120 else 0 end)')",
                [SLEEPER_JOB])
    deadline = time.monotonic() + 100
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = project.sql("select d.job_pid from cron.job_run_details d join cron.job j using (jobid) "
                          "where j.jobname = %s and d.status = 'running'", [SLEEPER_JOB])
        pid = pid[0][0] if pid else None
        time.sleep(0.5)
    assert pid, "the sleeper job never ran"
    killed_at = now()
    assert project.one("select pg_terminate_backend(%s)", [pid])
    project.wait_for_run(SLEEPER_JOB, project.started, status="failed", timeout=30)
    report = project.health()
    assert report["metrics"]["cron_failures_1h"] >= 1
    assert report["checks"]["cron_failures_1h"] in ("warning", "critical") and "check_scheduler" in report["recommendations"]
    assert report["system_status"] in ("warning", "critical")
    project.sql("delete from fault_test.sleep_flag")  # the next run succeeds
    project.killed_run_at = killed_at


def test_jobs_run_after_down_and_up_on_the_same_url(project):
    url = project.url
    project._url = ""  # asked again after the restart
    # Fewer connections from the next start on, for the exhaustion test below.
    project.sql("alter system set max_connections = 30")
    last_before = project.wait_for_run(PERFORMANCE_JOB, project.started)
    project.cli("down")
    project.cli("up")
    restarted = now()
    assert project.url == url                                       # one port for the server's life
    after = project.wait_for_run(PERFORMANCE_JOB, restarted)
    FIGURES["scheduler gap after down/up (s)"] = round((after - last_before).total_seconds(), 1)
    project.wait_for_run(SLEEPER_JOB, project.killed_run_at)         # the killed job's next run succeeded


def _client(url: str, users: list[uuid.UUID], stop: threading.Event, acked: list, errors: list) -> None:
    """Requests credits as each user and approves them as the backend, PostgREST-shaped:
    one transaction per call; a call counts as acknowledged once its commit returned."""
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        errors.append(str(exc))
        return
    with conn:
        for uid in users:
            for _ in range(5):                                       # financial_transaction: 5 / hour
                if stop.is_set():
                    return
                try:
                    rid = request(conn, Caller.user(uid), "select public.request_credits(7)")[0][0]
                    acked.append(("requested", rid))
                    request(conn, SERVICE, "select public.approve_credit_request(%s)", [rid])
                    acked.append(("approved", rid))
                except psycopg.Error as exc:
                    errors.append(type(exc).__name__)
                    return


def test_kill_9_under_load_loses_no_acknowledged_commit_and_the_scheduler_comes_back(project):
    url = project.url
    user_ids = [uuid.uuid4() for _ in range(400)]
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany("insert into auth.users (id, email) values (%s, %s)",
                            [(u, f"{u}@faults.ao") for u in user_ids])
    last_before = project.wait_for_run(PERFORMANCE_JOB, project.started)
    stop, acked, errors = threading.Event(), [], []
    clients = [threading.Thread(target=_client, args=(url, user_ids[i::4], stop, acked, errors)) for i in range(4)]
    for c in clients:
        c.start()
    time.sleep(3)
    killed_at = now()
    os.kill(project.postmaster_pid, signal.SIGKILL)
    for c in clients:
        c.join(30)
    stop.set()
    assert errors, "the clients should have seen the server die"
    project.cli("up")
    restarted = now()

    requested = {rid for what, rid in acked if what == "requested"}
    approved = {rid for what, rid in acked if what == "approved"}
    assert len(approved) >= 20, f"too little load before the kill ({len(approved)} approvals)"
    found = dict(project.sql("select id, status from public.credit_requests where id = any(%s)", [list(requested)]))
    lost = (requested - found.keys()) | {rid for rid in approved if found.get(rid) != "approved"}
    ledger = project.one("select count(*) from public.credit_transactions where credit_request_id = any(%s)",
                         [list(approved)])
    FIGURES["kill -9: acknowledged commits"] = len(requested) + len(approved)
    FIGURES["kill -9: acknowledged commits lost"] = len(lost)
    assert lost == set() and ledger == len(approved)
    integrity = project.cli("integrity", check=False)
    assert integrity.returncode == 0, integrity.stdout + integrity.stderr

    after = project.wait_for_run(PERFORMANCE_JOB, restarted)
    FIGURES["scheduler gap after kill -9 and up (s)"] = round((after - last_before).total_seconds(), 1)
    FIGURES["kill -9 to restart (s)"] = round((restarted - killed_at).total_seconds(), 1)


def test_exhausted_connections_warn_first_then_health_says_unknown_in_one_line(project):
    url = project.url
    max_conn = project.one("show max_connections")
    assert max_conn == "30"
    held = []
    try:
        # Up to 80% in use (the checker's own connection included): connection_usage warns.
        while project.one("select count(*) from pg_stat_activity where backend_type = 'client backend'") < 24:
            held.append(psycopg.connect(url, autocommit=True))
        report = project.health()
        assert report["checks"]["connection_usage"] == "warning", report["metrics"]["connection_usage"]
        # Then every slot taken, the superuser's reserved ones included.
        while True:
            try:
                held.append(psycopg.connect(url, autocommit=True))
            except psycopg.OperationalError:
                break
        proc = project.cli("health", check=False)
        assert proc.returncode == 3
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert "too many clients" in proc.stderr or "connection" in proc.stderr
    finally:
        for conn in held:
            conn.close()
    assert project.cli("health", check=False).returncode in (0, 1, 2)


def test_up_fails_in_one_line_when_it_cannot_schedule_the_jobs(project):
    """pg_cron pointed at a database that does not exist: `up` must not say "ready"."""
    project.sql("alter system set cron.database_name = 'nowhere'")
    project.cli("down")
    failed = project.cli("up", check=False)
    assert failed.returncode != 0 and "embedded database ready" not in failed.stdout
    assert failed.stderr.strip().splitlines()[-1].startswith("error: the pg_cron jobs could not be scheduled")
    assert "Traceback" not in failed.stderr
    project.sql("alter system reset cron.database_name")
    project.cli("down")
    assert "embedded database ready" in project.cli("up").stdout
