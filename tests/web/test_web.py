"""`smsao-db serve`: HTTP API, Prometheus /metrics, access control, and the page in a real browser."""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timezone
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitoring_support import add_config, service_role_login
from browser_support import ARTIFACTS, browser  # noqa: F401 (a fixture)
from support import PROJECT_DIR, Caller, login_url, new_home, remove_new_home, serving
from runner import migrate
from runner.embedded import Cluster, free_port
from runner.errors import UserError
from runner.monitoring.store import DashboardStore
from runner.web import app as web
from runner.web.app import DashboardServer, prometheus_name

SMSAO_DB = Path(sys.executable).parent / "smsao-db"


def report(status: str, **metrics) -> dict:
    base = {"total_users": 3, "active_sms_configs": 1, "pending_credit_requests": 0,
            "failed_sms_24h": 0, "orphaned_data": 0}
    recs = {"healthy": [], "warning": ["review_pending_credit_requests"],
            "critical": ["configure_sms_gateway"]}[status]
    checks = {"healthy": {}, "warning": {"pending_credit_requests": "warning"},
              "critical": {"active_sms_configs": "critical"}}[status]
    return {"timestamp": "2026-01-01T00:00:00Z", "system_status": status,
            "metrics": {**base, **metrics}, "recommendations": recs, "checks": checks}


def seed_snapshot(db, status: str, ago: str = "0 minutes", **metrics) -> int:
    return db.one("insert into public.system_health_snapshots (checked_at, system_status, report) "
                  "values (now() - %s::interval, %s, %s) returning id",
                  [ago, status, json.dumps(report(status, **metrics))])


def seed_alert(db, severity: str, message: str, ago: str = "1 minute") -> int:
    return db.one("insert into public.system_alerts (created_at, severity, message) "
                  "values (now() - %s::interval, %s, %s) returning id", [ago, severity, message])


def seed_samples(db) -> None:
    """A day of one-minute samples with a slow spell and a gap, as pg_cron would leave them."""
    db.sql("""insert into public.performance_samples (sampled_at, response_time_ms, error_rate)
              select now() - make_interval(mins => g), 4 + 3 * sin(g / 60.0) + case when g between 300 and 330
                     then 25 else 0 end, case when g between 300 and 310 then 0.05 else 0 end
                from generate_series(1, 1439) g where g not between 700 and 760""")


def seed_baseline(db, at: str = "now() - interval '61 minutes'") -> None:
    """A performance sample carrying the call counters, at `at` (SQL): from there on refusals per
    hour are known (the scheduled sample does this every minute)."""
    db.sql("insert into public.performance_samples (sampled_at, response_time_ms, details) "
           f"values ({at}, 1, jsonb_build_object('counters', smsao.critical_counters_now()))")


def refuse(db, times: int) -> None:
    """`times` calls of request_credits refused (a suspended user), each rolled back."""
    suspended = Caller.user(db.create_user(status="suspended"))
    for _ in range(times):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.as_(suspended, "select public.request_credits(10)")


class Client:
    def __init__(self, server: DashboardServer | None):
        self.host, self.port = "127.0.0.1", server.server_address[1] if server else 0

    @classmethod
    def at(cls, port: int) -> "Client":
        c = cls(None)
        c.port = port
        return c

    def request(self, method: str, path: str, headers: dict | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read().decode()  # headers: case-insensitive
        finally:
            conn.close()

    def json(self, method: str, path: str, headers: dict | None = None):
        status, _, body = self.request(method, path, headers)
        return status, json.loads(body)


@pytest.fixture
def store(db):
    s = DashboardStore(db.url, pool_size=3).open()
    yield s
    s.close()


def start(store, host="127.0.0.1", **kw) -> DashboardServer:
    server = DashboardServer(host, 0, store, **kw)
    server.serve_in_thread()
    return server


@pytest.fixture
def server(store):
    srv = start(store)
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def client(server):
    return Client(server)


# -- /api/health ----------------------------------------------------------------------------
def test_api_health_serves_the_latest_stored_snapshot(db, client):
    status, body = client.json("GET", "/api/health")
    assert status == 503 and body["system_status"] == "unknown"
    seed_snapshot(db, "critical", ago="10 minutes", active_sms_configs=0)
    latest = seed_snapshot(db, "warning", ago="1 minute", pending_credit_requests=4)
    status, body = client.json("GET", "/api/health")
    assert status == 200
    assert body["system_status"] == "warning" and body["snapshot_id"] == latest
    assert body["metrics"]["pending_credit_requests"] == 4
    assert body["recommendations"] == ["review_pending_credit_requests"]
    assert 50 <= body["age_seconds"] <= 120
    # Reading the snapshot never runs (or stores) a new check.
    assert db.one("select count(*) from public.system_health_snapshots") == 2


def test_unknown_paths_and_actions_are_404(client):
    assert client.request("GET", "/nope")[0] == 404
    assert client.request("POST", "/api/alerts/abc/acknowledge")[0] == 404
    assert client.request("GET", "/healthz")[2] == "ok\n"


def test_acknowledge_persists_once(db, client):
    alert = seed_alert(db, "critical", "no active SMS configuration")
    assert client.json("POST", f"/api/alerts/{alert}/acknowledge") == (200, {"id": alert, "outcome": "acknowledged"})
    first = db.one("select acknowledged_at from public.system_alerts where id = %s", [alert])
    assert first is not None
    assert client.json("POST", f"/api/alerts/{alert}/acknowledge")[0] == 409
    assert db.one("select acknowledged_at from public.system_alerts where id = %s", [alert]) == first
    assert client.json("POST", "/api/alerts/999999/acknowledge")[0] == 404


def test_a_dropped_database_connection_is_replaced_transparently(db, store, client):
    seed_snapshot(db, "healthy")
    assert client.json("GET", "/api/health")[0] == 200
    db.sql("select pg_terminate_backend(pid) from pg_stat_activity "
           "where datname = current_database() and pid <> pg_backend_pid()")
    assert client.json("GET", "/api/health")[0] == 200


# -- /metrics -------------------------------------------------------------------------------
def scrape(client) -> dict:
    status, headers, body = client.request("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_metrics_expose_every_health_metric_status_response_time_and_error_rate(db, client):
    seed_snapshot(db, "warning", pending_credit_requests=7, failed_sms_24h=2)
    seed_alert(db, "warning", "pending requests")
    seed_alert(db, "critical", "gateway down")
    db.sql("insert into public.performance_samples (response_time_ms, error_rate) values (12.5, 0.25)")
    m = scrape(client)
    assert m[("smsao_up", ())] == 1
    assert {s: m[("smsao_system_status", (("status", s),))] for s in ("healthy", "warning", "critical", "unknown")} \
        == {"healthy": 0, "warning": 1, "critical": 0, "unknown": 0}
    assert m[("smsao_system_status_code", ())] == 1
    assert m[("smsao_total_users", ())] == 3
    assert m[("smsao_active_sms_configs", ())] == 1
    assert m[("smsao_pending_credit_requests", ())] == 7
    assert m[("smsao_failed_sms_24h", ())] == 2
    assert m[("smsao_orphaned_data", ())] == 0
    assert m[("smsao_response_time_seconds", ())] == pytest.approx(0.0125)
    assert m[("smsao_error_ratio", ())] == 0.25
    assert m[("smsao_open_alerts", (("severity", "critical"),))] == 1
    assert m[("smsao_open_alerts", (("severity", "warning"),))] == 1
    assert abs(m[("smsao_health_check_timestamp_seconds", ())] - time.time()) < 60


def test_metrics_count_refused_and_failed_calls_that_rolled_back(db, client):
    refuse(db, 2)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.as_(Caller.user(db.create_user()), "select public.request_credits(0)")
    m = scrape(client)
    calls = {o: m[("smsao_critical_calls_total", (("operation", "request_credits"), ("outcome", o)))]
             for o in ("calls", "errors", "refusals")}
    assert calls == {"calls": 3, "errors": 1, "refusals": 2}
    assert m[("smsao_critical_calls_total", (("operation", "contact_operation"), ("outcome", "calls")))] == 0


def json_block(page: str, block_id: str):
    """The data of a page's <script type="application/json" id=...> block (what its chart draws)."""
    found = re.search(rf'<script type="application/json" id="{block_id}">(.*?)</script>', page, re.S)
    return json.loads(found[1]) if found else None


def test_the_page_has_engine_scheduler_and_security_sections(db, client):
    db.sql("select public.record_health_snapshot()")
    # The sample that opens the previous hour: from there on, refusals per hour are known.
    seed_baseline(db, "date_trunc('hour', now()) - interval '1 hour'")
    admin = db.create_user(admin=True)
    for i in range(12):
        db.sql("insert into public.admin_audit_logs (admin_id, action, target_table, target_id) "
               "values (%s, %s, 'profiles', 'x')", [admin, f"action_{i:02d}"])
    db.sql("insert into public.pii_access_audit (accessor_id, subject_user_id, table_name, fields, purpose) "
           "values (%s, %s, 'profiles', '{email,phone}', 'support')", [admin, admin])
    status, _, body = client.request("GET", "/")
    assert status == 200
    for group in ("application", "engine", "scheduler", "security"):
        assert f'data-group="{group}"' in body, group
    assert 'data-metric="longest_transaction_s"' in body and 'data-metric="cron_failures_1h"' in body
    refusals = json_block(body, "refusals-data")
    assert len(refusals["labels"]) == 24 and refusals["labels"][-1].endswith(":00")
    # Known (0) from the baseline's hour on, not known (null) before it.
    assert refusals["refusals"][-2:] == [0, 0] and refusals["refusals"][0] is None
    assert re.search(r"No refused calls in the last \d hours with samples\.", body)
    assert "action_11" in body and "action_01" not in body and 'data-pager="admin"' in body
    assert "email, phone" in body
    status, _, older = client.request("GET", "/?admin_page=2")
    assert status == 200 and "action_01" in older and "action_11" not in older
    for bad in ("0", "-1", "x", "9999999"):
        assert client.request("GET", f"/?admin_page={bad}")[0] == 400


def test_metrics_follow_the_newest_snapshot_at_scrape_time(db, client):
    assert scrape(client)[("smsao_system_status_code", ())] == 3  # nothing stored: unknown
    seed_snapshot(db, "critical", active_sms_configs=0)
    m = scrape(client)
    assert m[("smsao_system_status", (("status", "critical"),))] == 1
    assert m[("smsao_system_status_code", ())] == 2
    assert m[("smsao_active_sms_configs", ())] == 0


def test_metrics_report_the_database_down_instead_of_failing(db):
    broken = DashboardStore(db.url.replace(str(db.url.split(":")[-1].split("/")[0]), "1"))
    srv = start(broken)  # never opened: every read fails
    try:
        m = scrape(Client(srv))
        assert m[("smsao_up", ())] == 0
        assert m[("smsao_system_status_code", ())] == 3
        status, body = Client(srv).json("GET", "/api/health")
        assert status == 503 and body["system_status"] == "unknown"
    finally:
        srv.shutdown()
        srv.server_close()
        broken.close()


# -- Prometheus' naming rules, linted by promtool -----------------------------------------
def promtool(exposition: str) -> subprocess.CompletedProcess:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: `./dev test` installs it (Debian package prometheus)"
    return subprocess.run([tool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30)


def test_promtool_flags_a_unit_abbreviation_and_a_counter_without_total():
    """The lint below can fail: these are the mistakes /metrics used to make."""
    bad = ("# HELP smsao_longest_transaction_s Oldest transaction.\n# TYPE smsao_longest_transaction_s gauge\n"
           "smsao_longest_transaction_s 1\n# HELP smsao_calls Calls.\n# TYPE smsao_calls counter\nsmsao_calls 3\n")
    proc = promtool(bad)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "abbreviated units" in out and "_total" in out


def test_a_real_exposition_follows_prometheus_naming_rules(db, client):
    """A migrated database with snapshots, samples, alerts and refused calls: promtool finds nothing."""
    add_config(db)
    db.sql("select smsao.record_schedule_state(true, 'postgres')")  # the scheduler's vitals measurable
    seed_samples(db)
    seed_baseline(db)   # the last hour's
    refuse(db, 1)
    db.sql("select public.record_performance_sample()")
    db.sql("update public.sms_configurations set is_active = false")
    db.sql("select public.record_health_snapshot()")                # critical: a real alert
    seed_alert(db, "warning", "pending requests")
    status, _, body = client.request("GET", "/metrics")
    assert status == 200
    proc = promtool(body)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), body
    names = {family.name for family in text_string_to_metric_families(body)}
    assert {"smsao_longest_transaction_seconds", "smsao_health_snapshot_age_seconds", "smsao_database_size_bytes",
            "smsao_connection_usage_ratio", "smsao_xid_age_ratio", "smsao_sms_failure_ratio", "smsao_error_ratio",
            "smsao_response_time_seconds", "smsao_blocked_sessions", "smsao_security_refusals_1h"} <= names
    assert "# TYPE smsao_critical_calls_total counter" in body
    assert [n for n in names if re.search(r"_(s|ms|rate|usage)$", n)] == []


@pytest.mark.parametrize("key, name, factor", [
    ("longest_transaction_s", "smsao_longest_transaction_seconds", 1.0),
    ("backup_age_s", "smsao_backup_age_seconds", 1.0),
    ("response_time_ms", "smsao_response_time_seconds", 0.001),
    ("sms_failure_rate", "smsao_sms_failure_ratio", 1.0),
    ("connection_usage", "smsao_connection_usage_ratio", 1.0),
    ("xid_age_ratio", "smsao_xid_age_ratio", 1.0),
    ("replication_lag_bytes", "smsao_replication_lag_bytes", 1.0),
    ("failed_sms_24h", "smsao_failed_sms_24h", 1.0),
    ("wal_archive_failing", "smsao_wal_archive_failing_segments", 1.0),
])
def test_report_metrics_get_base_unit_names(key, name, factor):
    assert prometheus_name(key) == (name, factor)


def test_an_unknown_vital_shows_why_on_the_page_and_has_no_gauge(db, client):
    """A vital the health check's owner cannot see is null, with the reason in details.unknown:
    the card says "unknown" and why, and /metrics has no gauge for it (absent, not 0)."""
    why = "role smsao_admin, which runs the health check, cannot see other sessions: grant it pg_read_all_stats"
    body = report("healthy", longest_transaction_s=None, connection_usage=None, xid_age_ratio=0.01)
    body["details"] = {"unknown": {"longest_transaction_s": why, "connection_usage": why}}
    db.sql("insert into public.system_health_snapshots (system_status, report) values ('healthy', %s)",
           [json.dumps(body)])
    status, _, page = client.request("GET", "/")
    assert status == 200
    card = re.search(r'<div class="card level-ok" data-metric="longest_transaction_s".*?</div></div>', page)
    assert card and '<div class="value">unknown</div>' in card[0] and "grant it pg_read_all_stats" in card[0]
    m = scrape(client)
    assert ("smsao_longest_transaction_seconds", ()) not in m and ("smsao_connection_usage_ratio", ()) not in m
    assert m[("smsao_xid_age_ratio", ())] == 0.01


# -- a login granted only service_role (not the owner, not a superuser) --------------------
def test_the_dashboard_and_metrics_work_for_a_login_granted_only_service_role(any_db):
    db = any_db
    add_config(db)
    seed_baseline(db, "now() - interval '3 hours'")
    refuse(db, 2)
    admin = db.create_user(admin=True)
    db.sql("insert into public.admin_audit_logs (admin_id, action, target_table, target_id) "
           "values (%s, 'suspend_user', 'profiles', 'x')", [admin])
    db.sql("select public.record_performance_sample()")
    db.sql("select public.record_health_snapshot()")
    alert = seed_alert(db, "warning", "x")
    with service_role_login(db) as url:
        with psycopg.connect(url) as conn:   # a real login, neither superuser nor the owner
            assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (False,)
        store = DashboardStore(url, pool_size=2).open()
        srv = start(store)
        try:
            c = Client(srv)
            status, _, body = c.request("GET", "/")
            assert status == 200 and "cannot read the database" not in body
            assert 'data-status="healthy"' in body and "suspend_user" in body
            assert re.search(r'<tr data-operation="request_credits"><td>request_credits</td><td>2</td>'
                             r'<td>0</td><td>2</td>', body)
            m = scrape(c)
            assert m[("smsao_up", ())] == 1 and m[("smsao_system_status_code", ())] == 0
            assert m[("smsao_critical_calls_total", (("operation", "request_credits"), ("outcome", "refusals")))] == 2
            assert m[("smsao_longest_transaction_seconds", ())] >= 0   # the owner runs the check: it sees all
            assert c.json("GET", "/api/health")[1]["system_status"] == "healthy"
            assert c.json("POST", "/api/refresh")[0] == 200
            assert c.json("POST", f"/api/alerts/{alert}/acknowledge")[0] == 200
        finally:
            srv.shutdown()
            srv.server_close()
            store.close()
    assert db.one("select count(*) from public.system_health_snapshots") == 2


def test_smsao_db_serve_runs_as_a_login_granted_only_service_role(db):
    """The command itself, as a DBA runs it with the monitoring login's URL."""
    db.sql("select public.record_health_snapshot()")
    with service_role_login(db) as url:
        port = free_port()
        with serving(SMSAO_DB, port, {**os.environ, "DATABASE_URL": url}):
            m = scrape(Client.at(port))
            assert m[("smsao_up", ())] == 1 and m[("smsao_system_status_code", ())] == 2   # no gateway
            assert ("smsao_critical_calls_total", (("operation", "request_credits"), ("outcome", "calls"))) in m
            status, _, page = Client.at(port).request("GET", "/")
            assert status == 200 and "cannot read the database" not in page and 'id="security"' in page


def test_a_login_without_service_role_gets_one_clear_error_not_an_empty_page(db):
    """A login that is not service_role reads nothing: the page says why (RLS would have
    shown it an empty, reassuring page had the readers not refused)."""
    db.sql("select public.record_health_snapshot()")
    db.sql("create role smsao_test_nobody login password 'Nobody-Pass-1'")
    try:
        store = DashboardStore(login_url(db.url, "smsao_test_nobody", "Nobody-Pass-1"), pool_size=1).open()
        srv = start(store)
        try:
            status, _, body = Client(srv).request("GET", "/")
            assert status == 200 and "cannot read the database: permission denied" in body
            m = scrape(Client(srv))
            assert m[("smsao_up", ())] == 0 and m[("smsao_system_status_code", ())] == 3
        finally:
            srv.shutdown()
            srv.server_close()
            store.close()
    finally:
        db.sql("drop role smsao_test_nobody")


# -- the database goes away under a running dashboard --------------------------------------
@pytest.fixture(scope="module")
def own_cluster():
    """A private server the tests may stop or freeze, with a migrated database."""
    home = new_home("smsao-web-down-")
    cluster = Cluster(home=home, settings={"fsync": "off"})
    cluster.start()
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("create database smsao")
    migrate.run("upgrade", cluster.url("smsao"), "head")
    yield cluster
    cluster.destroy()
    remove_new_home(home)


def timed(fn, *args):
    started = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - started


def answers_fast_while_down(c: Client, label: str) -> None:
    """/metrics, / and /api/health each answer within 2 s and say the database is down."""
    body, took = timed(c.request, "GET", "/metrics")
    assert took < 2 and body[0] == 200, (label, took)
    samples = {(s.name, tuple(s.labels.items())): s.value
               for f in text_string_to_metric_families(body[2]) for s in f.samples}
    assert samples[("smsao_up", ())] == 0 and samples[("smsao_system_status_code", ())] == 3, label
    (status, _, page), took = timed(c.request, "GET", "/")
    assert took < 2 and status == 200 and "cannot read the database" in page, (label, took)
    assert 'data-status="unknown"' in page
    (status, _, _), took = timed(c.request, "GET", "/api/health")
    assert took < 2 and status == 503, (label, took)


def test_a_frozen_server_does_not_hang_metrics_or_the_page(own_cluster, monkeypatch):
    """The server stops answering without closing anything (SIGSTOP: a hung host, a network
    partition): every GET still answers within 2 s, and all is back once it answers again."""
    own_cluster.start()
    url = own_cluster.url("smsao")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select public.record_health_snapshot()")
    store = DashboardStore(url, pool_size=2).open()
    srv = start(store)
    c = Client(srv)
    postmaster = int((own_cluster.data_dir / "postmaster.pid").read_text().split()[0])
    processes = [postmaster] + [int(p) for p in subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(postmaster)], capture_output=True, text=True).stdout.split()]
    try:
        assert scrape(c)[("smsao_up", ())] == 1
        for pid in processes:
            os.kill(pid, signal.SIGSTOP)
        try:
            answers_fast_while_down(c, "frozen")
            answers_fast_while_down(c, "frozen, again")
            monkeypatch.setattr(web, "WRITE_BUDGET_S", 1.0)   # a button's write: bounded too
            (status, body), took = timed(c.json, "POST", "/api/refresh")
            assert status == 503 and took < 2 and "did not answer" in body["error"], (status, took)
        finally:
            for pid in processes:
                os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 15
        while scrape(c)[("smsao_up", ())] != 1:
            assert time.monotonic() < deadline, "the dashboard did not recover"
            time.sleep(0.2)
    finally:
        srv.shutdown()
        srv.server_close()
        store.close()


def test_a_stopped_server_shows_as_down_within_2_seconds(own_cluster):
    """`smsao_up 0` and a page that says so, within 2 s, once the server has gone after the
    pool opened (its connections broken, new ones refused): not a hang past the 10 s scrape."""
    own_cluster.start()
    url = own_cluster.url("smsao")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("select public.record_health_snapshot()")
    store = DashboardStore(url, pool_size=3).open()
    srv = start(store)
    c = Client(srv)
    try:
        assert scrape(c)[("smsao_up", ())] == 1
        assert c.request("GET", "/")[0] == 200
        own_cluster.stop()
        answers_fast_while_down(c, "just stopped")       # the pooled connections break
        answers_fast_while_down(c, "still stopped")      # no connection at all: refused
        assert c.request("GET", "/healthz")[0] == 200    # liveness needs no database
    finally:
        srv.shutdown()
        srv.server_close()
        store.close()


# -- access control -------------------------------------------------------------------------
def test_a_non_loopback_address_needs_a_token(store):
    with pytest.raises(UserError, match="needs a token"):
        DashboardServer("0.0.0.0", 0, store)


def test_the_cli_refuses_a_public_bind_without_a_token_in_one_line(db):
    proc = subprocess.run([sys.executable, "-c", "from runner.cli import main; main()", "serve",
                           "--host", "0.0.0.0", "--port", "0", "--database-url", db.url],
                          capture_output=True, text=True, timeout=60, cwd=PROJECT_DIR,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR)})
    assert proc.returncode == 1
    assert "needs a token" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_with_a_token_every_request_must_carry_it(db, store):
    seed_snapshot(db, "healthy")
    srv = start(store, host="0.0.0.0", token="s3cret-token")
    c = Client(srv)
    try:
        for path in ("/", "/api/health", "/metrics", "/healthz"):
            status, headers, _ = c.request("GET", path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert c.request("GET", "/api/health", {"Authorization": "Bearer wrong"})[0] == 401
        assert c.request("POST", "/api/refresh")[0] == 401
        assert c.request("GET", "/api/health", {"Authorization": "Bearer s3cret-token"})[0] == 200
        assert c.request("GET", "/metrics", {"Authorization": "Bearer s3cret-token"})[0] == 200
        status, headers, _ = c.request("GET", "/?token=s3cret-token")
        assert status == 200 and "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        assert c.request("GET", "/api/health", {"Cookie": cookie})[0] == 200
        # Any Host is fine once the token is checked.
        assert c.request("GET", "/api/health", {"Authorization": "Bearer s3cret-token",
                                                "Host": "dash.example.org"})[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_without_a_token_only_loopback_hosts_and_same_origin_posts_are_served(db, client):
    alert = seed_alert(db, "warning", "x")
    assert client.request("GET", "/api/health", {"Host": "rebind.example.com"})[0] == 403
    assert client.request("GET", "/healthz", {"Host": f"localhost:{client.port}"})[0] == 200
    evil = {"Origin": "http://evil.example.com"}
    assert client.request("POST", f"/api/alerts/{alert}/acknowledge", evil)[0] == 403
    assert db.one("select acknowledged_at from public.system_alerts where id = %s", [alert]) is None
    same = {"Origin": f"http://127.0.0.1:{client.port}"}
    assert client.request("POST", f"/api/alerts/{alert}/acknowledge", same)[0] == 200


# -- malformed requests, over a raw socket -------------------------------------------------
def raw(port: int, request: bytes) -> bytes:
    """Sends `request` as is and returns what the server answers (it must answer, not hang)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
        return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("name, request_bytes, expected", [
    ("bad Content-Length", b"POST /api/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\n\r\n", 400),
    ("negative Content-Length", b"POST /api/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n", 400),
    ("two Content-Lengths", b"POST /api/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n"
                            b"Content-Length: 2\r\n\r\nab", 400),
    ("oversized body announced", b"POST /api/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                 b"Content-Length: 10000000\r\n\r\nshort", 413),
    ("oversized body sent", b"POST /api/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 200000\r\n\r\n"
                            + b"x" * 200000, 413),
    ("chunked body", b"POST /api/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n", 411),
    ("bad Host", b"GET /api/health HTTP/1.1\r\nHost: evil.example.com\r\n\r\n", 403),
    ("malformed Host", b"GET /api/health HTTP/1.1\r\nHost: [::1\r\n\r\n", 400),
    ("cross-origin POST", b"POST /api/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example.com\r\n"
                          b"Content-Length: 0\r\n\r\n", 403),
    ("malformed Origin", b"POST /api/refresh HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://[::1\r\n"
                         b"Content-Length: 0\r\n\r\n", 403),
    ("garbage request line", b"HELLO THERE\r\n\r\n", 400),
    ("wrong method", b"DELETE /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 405),
])
def test_malformed_requests_get_a_4xx_not_a_traceback_or_a_hang(db, server, caplog, name, request_bytes, expected):
    port = server.server_address[1]
    answer = raw(port, request_bytes)
    assert status_of(answer) == expected, (name, answer[:300])
    assert b"Traceback" not in answer
    assert not [r for r in caplog.records if r.exc_info], name
    # Nothing was run, and the server still answers.
    assert db.one("select count(*) from public.system_health_snapshots") == 0
    assert status_of(raw(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")) == 200


# -- the page in a real browser -------------------------------------------------------------
@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    pg.console_errors = errors  # a test that provokes an error on purpose clears it
    yield pg
    context.close()
    assert errors == []


def chart_data(page, canvas_id: str) -> dict:
    """The labels and datasets of the Chart.js chart drawn on a canvas (fails if there is none),
    once its box is shown and the canvas has a size."""
    assert page.locator(f"#{canvas_id}").is_visible()
    return page.evaluate("""id => {
        const chart = Chart.getChart(id);
        if (!chart || !chart.canvas.width || !chart.canvas.height) return null;
        return {labels: chart.data.labels, datasets: chart.data.datasets.map(d => ({label: d.label, data: d.data}))};
    }""", canvas_id)


def runs(values: list) -> int:
    """How many unbroken runs of numbers a line has (a null breaks it)."""
    return sum(1 for i, v in enumerate(values) if v is not None and (i == 0 or values[i - 1] is None))


def test_the_page_shows_status_metrics_alerts_chart_and_acknowledges_in_the_database(db, store, page):
    seed_samples(db)
    seed_snapshot(db, "warning", ago="2 minutes", pending_credit_requests=4, failed_sms_24h=12)
    alert = seed_alert(db, "warning", "System status changed to warning: 4 pending credit requests")
    seed_alert(db, "critical", "System status changed to critical: no active SMS configuration", ago="3 hours")
    srv = start(store, refresh_seconds=0)
    try:
        page.goto(srv.url + "/")
        badge = page.locator("#status")
        assert badge.inner_text().lower() == "warning"
        assert "status-warning" in badge.get_attribute("class")
        assert page.title().startswith("warning")
        assert page.locator('[data-metric="pending_credit_requests"] .value').inner_text() == "4"
        assert page.locator('[data-metric="failed_sms_24h"] .value').inner_text() == "12"
        assert page.locator('[data-metric="response_time_ms"] .value').inner_text().endswith("ms")
        assert "Last check:" in page.locator(".times").inner_text()
        rec = page.locator('#recommendations li[data-code="review_pending_credit_requests"]')
        assert "waiting for an admin" in rec.inner_text()
        assert page.locator('[data-metric="pending_credit_requests"]').get_attribute("data-level") == "warning"
        assert page.locator("#alerts tr").count() == 2
        # Chart.js drew the response time from the page's data: average and worst per 5 minutes,
        # the database's figures bucket by bucket, and the gap in sampling splits the line in two.
        response = chart_data(page, "response-chart")
        assert [d["label"] for d in response["datasets"]] == ["average", "worst"]
        series = store.response_series()
        avg, worst = (d["data"] for d in response["datasets"])
        assert [v for v in avg if v is not None] == [p["avg_ms"] for p in series]
        assert [v for v in worst if v is not None] == [p["max_ms"] for p in series]
        assert runs(avg) == 2 and len(response["labels"]) in (289, 290)
        assert response["labels"][max(i for i, v in enumerate(avg) if v is not None)] == \
            f"{series[-1]['bucket'].astimezone(timezone.utc):%H:%M}"
        assert page.locator('#response-summary [data-figure="worst-max"]').inner_text() == \
            f"{max(p['max_ms'] for p in series):.1f} ms"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        page.locator(f'tr[data-alert-id="{alert}"] button').click()
        page.wait_for_selector(f'tr[data-alert-id="{alert}"]', state="detached")
        assert page.locator("#alerts tr").count() == 1
        assert "acknowledged" in page.locator("#flash").inner_text()
        assert db.one("select acknowledged_at is not null from public.system_alerts where id = %s", [alert])
        page.reload()
        assert page.locator(f'tr[data-alert-id="{alert}"]').count() == 0
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_page_shows_engine_scheduler_and_security_from_a_real_report(db, store, page):
    db.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('gw', 'S', true)")
    # The sample that opened the last hour: the baseline of its refusals (and of this hour's bar).
    seed_baseline(db)
    refuse(db, 3)
    admin = db.create_user(admin=True)
    for i in range(15):
        db.sql("insert into public.admin_audit_logs (admin_id, action, target_table, target_id, created_at) "
               "values (%s, %s, 'profiles', 'x', now() - make_interval(mins => %s))", [admin, f"act_{i:02d}", i])
    db.sql("select public.record_health_snapshot()")
    srv = start(store, refresh_seconds=0)
    try:
        page.goto(srv.url + "/")
        for group in ("Engine", "Scheduler", "Security"):
            assert page.locator(f'.card-group h2:text-is("{group}")').count() == 1, group
        assert page.locator('[data-metric="security_refusals_1h"] .value').inner_text() == "3"
        assert page.locator('[data-metric="cron_failures_1h"] .value').inner_text() == "unknown"  # not measurable
        assert page.locator('[data-metric="connection_usage"] .value').inner_text().endswith("%")
        refusals = chart_data(page, "refusals-chart")
        assert len(refusals["labels"]) == 24
        per_hour = refusals["datasets"][0]["data"]
        # This hour's 3; the hours before the baseline sample are not known: null, no bar (not 0).
        assert per_hour[-1] == 3 and per_hour[0] is None and set(per_hour[:-1]) <= {None, 0}
        now_hour = refusals["labels"][-1]
        assert page.locator(f'#refused-hours tr[data-hour="{now_hour}"] td').all_inner_texts() == [now_hour, "3", "0", "3"]
        assert page.locator('#refusals-summary [data-figure="refusals-total"]').inner_text() == "3"
        assert page.locator('#operations tr[data-operation="request_credits"] td').all_inner_texts() == \
            ["request_credits", "3", "0", "3"]
        assert page.locator("#admin-actions tr[data-id]").count() == 10
        assert "act_00" in page.locator("#admin-actions").inner_text()
        page.locator('a[data-pager="admin"]').click()
        page.wait_for_url("**admin_page=2**")
        assert page.locator("#admin-actions tr[data-id]").count() == 5
        assert "act_14" in page.locator("#admin-actions").inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-security.png"), full_page=True)
    finally:
        srv.shutdown()
        srv.server_close()


def test_without_javascript_the_charts_figures_are_text(db, store, browser):
    """A browser without JavaScript (or without the chart library) shows the figures as text,
    and no empty chart boxes."""
    seed_samples(db)
    seed_baseline(db)
    refuse(db, 2)
    series = store.response_series()
    srv = start(store, refresh_seconds=0)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(srv.url + "/")
        assert page.locator("#response-chart").is_hidden() and page.locator("#refusals-chart").is_hidden()
        summary = page.locator("#response-summary")
        assert summary.locator('[data-figure="latest-avg"]').inner_text() == f"{series[-1]['avg_ms']:.1f} ms"
        assert summary.locator('[data-figure="worst-max"]').inner_text() == f"{max(p['max_ms'] for p in series):.1f} ms"
        assert page.locator('#refusals-summary [data-figure="refusals-total"]').inner_text() == "2"
        assert page.locator("#refused-hours tr[data-hour] td:nth-child(2)").all_inner_texts() == ["2"]
    finally:
        context.close()
        srv.shutdown()
        srv.server_close()


def test_without_samples_the_page_says_so_instead_of_drawing_empty_charts(db, client):
    status, _, body = client.request("GET", "/")
    assert status == 200
    assert "No performance samples in the last 24 hours." in body
    assert "Not known yet: refusals per hour are counted between performance samples" in body
    assert "<canvas" not in body and json_block(body, "response-data") is None
    assert json_block(body, "refusals-data") is None


def test_scripts_come_only_from_the_app_itself(db, client):
    """The Content-Security-Policy admits scripts from this origin only, and the pages need no
    more: no inline script, Chart.js and the pages' scripts served from /static/."""
    for path in ("/", "/business"):
        status, headers, body = client.request("GET", path)
        assert status == 200, path
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self';" in csp and "default-src 'self'" in csp and "unsafe-eval" not in csp
        assert headers.get_all("Cache-Control") == ["no-store"]
        scripts = re.findall(r"<script([^>]*)>", body)
        assert scripts and all('src="/static/' in a or 'type="application/json"' in a for a in scripts), scripts
        assert '<script src="/static/chart.umd.min.js"></script>' in body
    for name, expected in (("chart.umd.min.js", "Chart.js v4"), ("dashboard.js", "drawCharts"),
                           ("business.js", "new Chart"), ("chart.js-LICENSE.md", "MIT License")):
        status, headers, body = client.request("GET", f"/static/{name}")
        assert status == 200 and expected in body, name
        assert headers.get_all("Cache-Control") == ["no-cache"], name   # revalidated: never stale after an upgrade
        assert (headers["Content-Type"].startswith("text/javascript") if name.endswith(".js")
                else headers["Content-Type"].startswith("text/plain")), name
    for bad in ("/static/nope.js", "/static/..%2Fapp.py", "/static/../app.py", "/static/dashboard.css"):
        assert client.request("GET", bad)[0] == 404, bad


def test_the_page_refreshes_itself(db, store, page):
    seed_snapshot(db, "healthy", ago="5 minutes")
    srv = start(store, refresh_seconds=1)
    try:
        page.goto(srv.url + "/")
        assert page.locator("#status").inner_text().lower() == "healthy"
        assert page.locator("#alerts").inner_text().endswith("No open alerts.")
        seed_snapshot(db, "critical", active_sms_configs=0)
        seed_alert(db, "critical", "no gateway")
        page.wait_for_selector("#status.status-critical", timeout=5000)
        assert page.locator("#alerts tr").count() == 1
        assert page.locator('[data-metric="active_sms_configs"]').get_attribute("data-level") == "critical"
        # No samples yet: said in words, no empty chart. Once there are, a reload draws the charts,
        # and later reloads replace them (the old charts are destroyed, not left behind).
        assert page.locator("#response-summary").inner_text() == "No performance samples in the last 24 hours."
        assert page.locator("#performance canvas").count() == 0
        seed_samples(db)
        seed_baseline(db)
        page.wait_for_function("() => Chart.getChart('response-chart') && Chart.getChart('refusals-chart')",
                               timeout=5000)
        first = page.evaluate("() => Chart.getChart('response-chart').id")
        page.wait_for_function(f"() => Chart.getChart('response-chart').id > {first}", timeout=5000)
        assert page.evaluate("() => Object.keys(Chart.instances).length") == 2
        assert runs(chart_data(page, "response-chart")["datasets"][0]["data"]) == 2
    finally:
        page.goto("about:blank")   # stop the page's own refreshes before its server goes
        srv.shutdown()
        srv.server_close()


def test_the_page_works_with_a_token_from_the_address_bar(db, store, page):
    alert = seed_alert(db, "critical", "no gateway")
    seed_snapshot(db, "critical", active_sms_configs=0)
    srv = start(store, host="0.0.0.0", token="tok-123", refresh_seconds=0)
    try:
        port = srv.server_address[1]
        assert page.goto(f"http://127.0.0.1:{port}/").status == 401
        page.console_errors.clear()
        page.goto(f"http://127.0.0.1:{port}/?token=tok-123")
        assert page.locator("#status").inner_text().lower() == "critical"
        page.locator(f'tr[data-alert-id="{alert}"] button').click()  # the cookie carries the token
        page.wait_for_selector(f'tr[data-alert-id="{alert}"]', state="detached")
        assert db.one("select acknowledged_at is not null from public.system_alerts where id = %s", [alert])
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_refresh_button_runs_the_health_check_and_shows_its_result(db, store, page):
    seed_snapshot(db, "healthy", ago="1 hour")  # stale and wrong: there is no active gateway
    srv = start(store, refresh_seconds=0)
    try:
        page.goto(srv.url + "/")
        assert page.locator("#status").inner_text().lower() == "healthy"
        page.get_by_role("button", name="Run health check now").click()
        page.wait_for_selector("#status.status-critical", timeout=10000)
        assert db.one("select count(*) from public.system_health_snapshots") == 2
        assert db.one("select system_status from public.system_health_snapshots order by id desc limit 1") == "critical"
        # The change of status raised an alert, and the refreshed page lists it.
        assert page.locator("#alerts tr").count() == 1
        assert "healthy to critical" in page.locator("#alerts tr").inner_text()
        assert page.locator('#recommendations li[data-code="configure_sms_gateway"]').count() == 1
        assert "s ago" in page.locator(".times").inner_text()
    finally:
        srv.shutdown()
        srv.server_close()


def test_refresh_api_records_a_snapshot_that_api_health_then_serves(db, client):
    db.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('gw', 'SMSAO', true)")
    status, body = client.json("POST", "/api/refresh")
    assert status == 200 and body["system_status"] == "healthy"
    status, served = client.json("GET", "/api/health")
    assert status == 200 and served["snapshot_id"] == body["snapshot_id"]
    assert served["metrics"] == body["metrics"]


def test_metrics_have_a_gauge_for_every_metric_of_a_real_health_report(db, client):
    db.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('gw', 'SMSAO', true)")
    uid = db.create_user()
    db.sql("insert into public.sms_logs (user_id, recipient, status) values (%s, '+244900000001', 'failed')", [uid])
    db.sql("select public.record_health_snapshot()")
    db.sql("select public.record_performance_sample()")
    stored = db.one("select report from public.system_health_snapshots order by id desc limit 1")
    m = scrape(client)
    assert stored["metrics"], "the health report has metrics"
    for key, value in stored["metrics"].items():
        name, factor = prometheus_name(key)
        if value is None:   # not measurable here (no jobs scheduled): no gauge, not a 0
            assert (name, ()) not in m, key
            continue
        assert m[(name, ())] == pytest.approx(float(value) * factor), key
    assert m[("smsao_failed_sms_24h", ())] == 1
    status_code = {"healthy": 0, "warning": 1, "critical": 2}[stored["system_status"]]
    assert m[("smsao_system_status_code", ())] == status_code
    assert m[("smsao_response_time_seconds", ())] > 0
    assert m[("smsao_error_ratio", ())] == 0


def test_the_first_load_right_after_up_shows_the_status(page):
    """`smsao-db up` then `smsao-db serve`, as a newcomer runs them: the page shows a real
    status and a response time at once, not UNKNOWN."""
    home = new_home("smsao-first-")
    env = {**os.environ, "SMSAO_HOME": str(home)}
    env.pop("DATABASE_URL", None)
    cluster = Cluster(home=home)
    try:
        up = subprocess.run([str(SMSAO_DB), "up"], env=env, capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        port = free_port()
        with serving(SMSAO_DB, port, env, "--refresh", "0"):
            page.goto(f"http://127.0.0.1:{port}/")
            assert page.locator("#status").inner_text().lower() == "critical"  # a new database has no SMS gateway
            assert page.locator('[data-metric="response_time_ms"] .value').inner_text().endswith("ms")
            assert page.locator('#recommendations li[data-code="configure_sms_gateway"]').count() == 1
    finally:
        cluster.destroy()
        remove_new_home(home)
