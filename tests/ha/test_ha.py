"""The package on a pg_auto_failover formation (issue 17), on ONE formation shared by the
module: a monitor, a primary and a synchronous secondary, built by `smsao-db up --ha`'s own
code under a temporary data home (traversable by the `postgres` OS user, which runs it).

The tests run in file order: the failover test kills the primary, and the ones after it
see the formation with its roles swapped."""
from __future__ import annotations

import http.client
import json
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runner import migrate, schedule
from runner.ha import backup as ha_backup
from runner.ha import drill
from runner.ha.formation import Formation
from runner.monitoring.store import DashboardStore
from runner.web.app import DashboardServer
from cli_support import smsao_db
from support import Caller, request

pytestmark = pytest.mark.skipif(not shutil.which("pg_autoctl"),
                                reason="pg_autoctl is not installed (./dev setup installs it)")
RATE_OP = "ha_failover_probe"
RATE_MAX = 3


@pytest.fixture(scope="module")
def formation():
    base = Path(tempfile.mkdtemp(prefix="smsao-ha-"))
    base.chmod(0o755)  # the postgres OS user runs the nodes: it must traverse this folder
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMSAO_HOME", str(base / "h"))
        f = Formation()
        try:
            f.create(log=lambda msg: None)
            migrate.run("upgrade", f.url(), "head")
            ha_backup.configure(f)  # what `up --ha` does: stanza, repository, archiving checked
            schedule.apply(f.url())
            yield f
        finally:
            f.stop()
            shutil.rmtree(base, ignore_errors=True)


def one(url: str, query: str, params=None):
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(query, params).fetchone()[0]


def roles(f: Formation) -> tuple[str, str]:
    nodes = {n.name: n.reported for n in f.nodes()}
    primary = next(n for n, s in nodes.items() if s == "primary")
    standby = next(n for n, s in nodes.items() if s == "secondary")
    return primary, standby


def test_security_passwords_private_no_trust_over_tcp(formation):
    for path in (formation.password_file, formation.pgpass_file):
        assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert oct(formation.socket_dir.stat().st_mode & 0o777) == "0o700"
    for name in ("monitor", "node1", "node2"):
        rules = [ln.split() for ln in (formation.data_dir(name) / "pg_hba.conf").read_text().splitlines()
                 if ln.strip() and not ln.startswith("#")]
        assert rules and all(r[-1] != "trust" for r in rules if r[0].startswith("host")), name
    # token_urlsafe passwords need no quoting in a URL
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(formation.url().replace(formation.password, "wrong"), connect_timeout=5).close()


def test_migrations_through_the_multi_host_url(formation):
    url = formation.url()
    assert "," in url.split("@")[1].split("/")[0] and url.endswith("target_session_attrs=read-write")
    primary, standby = roles(formation)
    head = one(url, "select version_num from smsao_migrations.alembic_version")
    assert head == one(formation.node_url(standby), "select version_num from smsao_migrations.alembic_version")
    assert one(url, "select not pg_is_in_recovery()")
    # The CLI takes the same URL (it used to end in a ValueError from SQLAlchemy's URL parser).
    proc = smsao_db("--database-url", url, "migrate", "current")
    assert proc.returncode == 0, proc.stderr
    assert head in proc.stdout + proc.stderr
    assert smsao_db("url").stdout.strip() == url  # SMSAO_HOME is the formation's: `url` prints it


def test_pg_cron_preloaded_everywhere_and_runs_on_the_primary_only(formation):
    primary, standby = roles(formation)
    for name in (primary, standby):
        assert one(formation.node_url(name), "show shared_preload_libraries") == "pg_cron"
        assert one(formation.node_url(name), "show cron.use_background_workers") == "on"
    launcher = "select count(*) from pg_stat_activity where backend_type = 'pg_cron launcher'"
    assert one(formation.node_url(primary), launcher) == 1
    assert one(formation.node_url(standby), launcher) == 0
    assert one(formation.url(), "select count(*) from cron.job where jobname like 'smsao-%%'") \
        == one(formation.url(), "select count(*) from smsao.cron_jobs()")          # every job, once


def test_replication_vitals_on_a_healthy_formation(formation):
    report = one(formation.url(), "select public.production_system_health_check()")
    assert report["metrics"]["replication_standbys"] == 1
    assert report["checks"]["replication_standbys"] == "ok"
    assert report["metrics"]["replication_lag_bytes"] >= 0
    assert report["thresholds"]["replication_lag_bytes"]["warning_at"] == 16777216
    status = json.loads(smsao_db("ha", "status", "--json").stdout)
    assert status["healthy"] and sorted(n["role"] for n in status["nodes"]) == ["primary", "standby"]
    # The same figures in /metrics (served from the newest stored snapshot).
    one(formation.url(), "select public.record_health_snapshot() is not null")
    store = DashboardStore(formation.url()).open()
    server = DashboardServer("127.0.0.1", 0, store)
    server.serve_in_thread()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        server.shutdown()
        server.server_close()
        store.close()
    samples = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples["smsao_replication_standbys"] == 1
    assert samples["smsao_replication_lag_bytes"] >= 0
    assert "smsao_replication_lag_s" not in samples  # base units: smsao_replication_lag_seconds


def test_kill_9_of_the_primary_under_load_loses_no_acknowledged_commit(formation):
    old_primary, _ = roles(formation)
    user = uuid.uuid4()
    with psycopg.connect(formation.url()) as conn:
        conn.execute("insert into auth.users (id, email) values (%s, 'probe@ha.invalid')", [user])
        conn.execute("update public.profiles set status = 'active' where user_id = %s", [user])
        conn.commit()
        admitted = [request(conn, Caller.user(user), "select public.enhanced_security_rate_limit(%s, %s, 60)",
                            [RATE_OP, RATE_MAX])[0][0] for _ in range(RATE_MAX + 1)]
    assert admitted == [True] * RATE_MAX + [False]
    store = DashboardStore(formation.url()).open()  # the dashboard's pool, opened before the failover
    try:
        report = drill.run(clients=3, ops_per_client=150, max_seconds=40)
        assert report.old_primary == old_primary and report.new_primary not in (None, old_primary)
        assert report.lost_acknowledged_commits == 0, report
        assert report.acknowledged_on_new_primary > 0 and report.first_write_after_kill_s < 30
        assert report.integrity_ok, report.integrity_failed
        # The vitals saw the standby go (the new primary expects one: its slot) and come back.
        assert (report.standbys_after_failover, report.standbys_check_after_failover) == (0, "warning")
        assert (report.standbys_after_rejoin, report.standbys_check_after_rejoin) == (1, "ok")
        # Jobs resumed on the new primary within the contract's 90 s.
        assert report.scheduler_resumed_after_s is not None and report.scheduler_resumed_after_s <= 90
        assert report.rejoin_s is not None and report.passed, report.problems
        # The dashboard's pool recovers by itself: its dead connections are replaced.
        assert store.latest_sample() is not None
    finally:
        store.close()
    # The old primary rejoined as a standby, streaming from the new one.
    primary, standby = roles(formation)
    assert (primary, standby) == (report.new_primary, old_primary)
    assert one(formation.node_url(standby), "select pg_is_in_recovery()")
    # The rate limiter's windows are UNLOGGED: the failover forgot this key's, so it admits at
    # most one more window of attempts (docs/ha.md), then is exact again.
    with psycopg.connect(formation.url()) as conn:
        admitted = [request(conn, Caller.user(user), "select public.enhanced_security_rate_limit(%s, %s, 60)",
                            [RATE_OP, RATE_MAX])[0][0] for _ in range(RATE_MAX + 2)]
    assert admitted == [True] * RATE_MAX + [False, False]


def test_backups_from_the_standby_keep_archiving_after_the_failover_and_restore(formation):
    """Runs after the failover: the new primary archives (pgbackrest check inside `backup`
    switches a segment and waits for it), the files come from the standby, and the restore
    drill proves the backup."""
    primary, standby = roles(formation)
    report = ha_backup.backup(formation)
    assert report["from_standby"] and report["archive_covers_until"]
    log = "\n".join(p.read_text() for p in (formation.root / "pgbackrest" / "log").glob("*backup*.log"))
    assert "replay on the standby reached" in log  # backup-standby: files copied from the standby
    assert one(formation.node_url(primary), "select failed_count from pg_stat_archiver") == 0
    assert one(formation.node_url(primary), "select archived_count from pg_stat_archiver") > 0
    drilled = ha_backup.drill(formation, None, keep=False)
    assert drilled["passed"], drilled["steps"]


def test_ha_commands_without_a_formation_say_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("SMSAO_HOME", str(tmp_path))
    for args in (("ha", "status"), ("failover-drill",)):
        proc = smsao_db(*args)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "up --ha" in proc.stderr, proc.stderr


def test_a_single_server_reports_replication_as_unknown(db):
    report = db.one("select public.production_system_health_check()")
    for key in ("replication_standbys", "replication_lag_bytes", "replication_lag_s"):
        assert report["metrics"][key] is None
        assert report["checks"][key] == "ok"
        assert "not part of a replicated formation" in report["details"]["unknown"][key]
