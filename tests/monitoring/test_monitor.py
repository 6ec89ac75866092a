"""`smsao-db monitor`: one frame with --once and the health exit code; live reaction to alerts."""
from __future__ import annotations

import subprocess
import sys
import threading
import time


from monitoring_support import service_role_login
from support import PROJECT_DIR
from runner.monitoring.monitor import AlertListener, frames, minute_values, sparkline
from runner.monitoring.store import DashboardStore


def monitor_once(url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from runner.cli import main; main()", "monitor", "--once",
                           "--database-url", url],
                          capture_output=True, text=True, timeout=60, cwd=PROJECT_DIR,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR), "COLUMNS": "120"})


def add_gateway(db):
    db.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('gw', 'SMSAO', true)")


def test_healthy_exits_0(db):
    add_gateway(db)
    db.create_user()
    proc = monitor_once(db.url)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert " HEALTHY " in out
    for label in ("Users", "Active SMS gateways", "Pending credit requests", "Failed SMS (24 h)", "Orphaned rows"):
        assert label in out
    assert "Recommendations" in out and "Open alerts (0)" in out
    assert "last stored snapshot never" in out


def test_warning_exits_1_with_its_recommendation(db):
    add_gateway(db)
    db.sql("update smsao.health_thresholds set warning_at = 2 where metric = 'pending_credit_requests'")
    uid = db.create_user()
    db.sql("insert into public.credit_requests (user_id, amount) select %s, 10 from generate_series(1, 3)", [uid])
    proc = monitor_once(db.url)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert " WARNING " in proc.stdout
    assert "review_pending_credit_requests: credit requests are waiting for an admin" in proc.stdout


def test_critical_exits_2_and_shows_alerts_and_the_last_snapshot(db):
    db.sql("select public.record_health_snapshot()")  # no gateway: critical, one alert
    proc = monitor_once(db.url)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert " CRITICAL " in proc.stdout
    assert "configure_sms_gateway" in proc.stdout
    assert "Open alerts (1)" in proc.stdout and "CRITICAL" in proc.stdout.split("Open alerts")[1]
    assert "healthy to critical" in proc.stdout
    assert "last stored snapshot never" not in proc.stdout


def test_unknown_exits_3_when_the_health_check_is_missing(db):
    db.sql("drop function public.production_system_health_check()")
    proc = monitor_once(db.url)
    assert proc.returncode == 3
    assert " UNKNOWN " in proc.stdout and "not installed" in proc.stdout


def test_unknown_exits_3_in_one_line_when_the_database_is_unreachable():
    proc = monitor_once("postgresql://postgres@127.0.0.1:1/nope")
    assert proc.returncode == 3
    assert proc.stderr.startswith("error: cannot connect") and len(proc.stderr.strip().splitlines()) == 1


def test_the_response_time_sparkline_covers_the_last_hour(db):
    add_gateway(db)
    db.sql("""insert into public.performance_samples (sampled_at, response_time_ms, error_rate)
              select now() - make_interval(mins => g), case when g = 10 then 50 else 5 end, 0
                from generate_series(1, 30) g""")
    db.sql("insert into public.performance_samples (response_time_ms, error_rate) values (7.5, 0.5)")
    proc = monitor_once(db.url)
    assert proc.returncode == 0
    assert "█" in proc.stdout and "▁" in proc.stdout
    assert "latest 7.5 ms" in proc.stdout and "max 50.0 ms" in proc.stdout and "error rate 50.00%" in proc.stdout


def test_sparkline_scales_and_leaves_gaps():
    assert sparkline([1, None, 5, 3]) == "▁ █▅"
    assert sparkline([2, 2]) == "▁▁"
    assert sparkline([None, None]) == ""


def test_minute_values_put_now_at_the_right_end():
    from datetime import datetime, timedelta, timezone
    now = datetime(2026, 1, 1, 12, 30, 40, tzinfo=timezone.utc)
    minute = now.replace(second=0)
    series = [{"bucket": minute, "avg_ms": 3.0}, {"bucket": minute - timedelta(minutes=59), "avg_ms": 1.0},
              {"bucket": minute - timedelta(minutes=60), "avg_ms": 9.0}]
    values = minute_values(series, now)
    assert len(values) == 60 and values[-1] == 3.0 and values[0] == 1.0 and 9.0 not in values


def test_live_view_redraws_at_once_when_an_alert_arrives(db):
    add_gateway(db)
    db.sql("select public.record_health_snapshot()")  # healthy, no alert
    store = DashboardStore(db.url, pool_size=2).open()
    listener = AlertListener(db.url)
    got = []
    try:
        stream = frames(store, listener, interval=30)
        listener.wait(0.01)  # LISTEN before anything happens
        assert listener.listening

        def trigger():
            time.sleep(0.5)
            db.sql("update public.sms_configurations set is_active = false")
            db.sql("select public.record_health_snapshot()")  # healthy -> critical: alert + NOTIFY

        t = threading.Thread(target=trigger)
        started = time.monotonic()
        t.start()
        frame = next(stream)
        elapsed = time.monotonic() - started
        t.join()
        got.append(frame)
        assert elapsed < 5, f"the frame came after {elapsed:.1f}s, not at the alert"
        assert frame.note and frame.note.startswith("new alert")
        assert frame.status == "critical" and frame.exit_code == 2
        assert [a["severity"] for a in frame.alerts] == ["critical"]
    finally:
        listener.close()
        store.close()


def test_the_listener_reconnects_after_its_connection_drops(db):
    listener = AlertListener(db.url)
    try:
        listener.wait(0.01)
        pid = listener.conn.info.backend_pid
        db.sql("select pg_terminate_backend(%s)", [pid])
        assert listener.wait(0.2) == []       # notices the loss
        listener.wait(0.01)                   # and listens again
        assert listener.listening and listener.conn.info.backend_pid != pid
        db.sql("select pg_notify('system_alerts', '{\"severity\": \"warning\"}')")
        assert listener.wait(2) == ['{"severity": "warning"}']
    finally:
        listener.close()


def test_monitor_works_for_a_real_login_granted_only_service_role(db):
    """A login of its own (not `set role` in a superuser's session): the live check, the
    stored snapshot, the alerts and the samples are all read, and an alert wakes the view."""
    db.sql("select public.record_health_snapshot()")   # no gateway: critical, one alert
    db.sql("insert into public.performance_samples (response_time_ms, error_rate) values (7.5, 0)")
    with service_role_login(db) as url:
        proc = monitor_once(url)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert " CRITICAL " in proc.stdout and "UNKNOWN" not in proc.stdout
        assert "Open alerts (1)" in proc.stdout and "last stored snapshot never" not in proc.stdout
        assert "latest 7.5 ms" in proc.stdout
        store = DashboardStore(url, pool_size=1).open()
        listener = AlertListener(url)
        try:
            listener.wait(0.01)
            add_gateway(db)
            db.sql("select public.record_health_snapshot()")   # critical -> recovered: NOTIFY
            frame = next(frames(store, listener, interval=5))
            assert frame.note and frame.status == "healthy" and frame.error is None
        finally:
            listener.close()
            store.close()
