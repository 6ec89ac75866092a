"""Snapshots and alerts, performance samples, housekeeping, counter compaction."""
import json
import subprocess
import threading

import psycopg
import pytest

from monitoring_support import METRIC_NAMES, add_config, add_sms, health_and_counts, set_threshold
from runner import migrate
from runner.embedded import find_bindir
from support import ANON, SERVICE, Caller

SNAPSHOT = "select public.record_health_snapshot()"
SAMPLE = "select public.record_performance_sample()"


class Listener:
    """A separate connection LISTENing on system_alerts."""

    def __init__(self, db):
        self.conn = db.connect()
        self.conn.execute("listen system_alerts")

    def received(self, wait: float = 0.5) -> list[dict]:
        return [json.loads(n.payload) for n in self.conn.notifies(timeout=wait, stop_after=None)]

    def close(self):
        self.conn.close()


@pytest.fixture
def listener(db):
    ear = Listener(db)
    yield ear
    ear.close()


def alerts(db):
    return db.sql("select severity, message from public.system_alerts order by id")


def test_status_changes_write_one_alert_and_one_notify_each(db, listener):
    # No gateway yet: the first snapshot is a change from healthy.
    first = db.one(SNAPSHOT)
    assert first["system_status"] == "critical" and first["alert"]["severity"] == "critical"
    got = listener.received()
    assert len(got) == 1
    assert got[0] == first["alert"] and got[0]["previous_status"] == "healthy"
    assert len(json.dumps(got[0])) < 300            # a small payload, not the report

    db.one(SNAPSHOT)                                # no change: no alert, no notification
    assert listener.received(0.3) == [] and len(alerts(db)) == 1

    add_config(db)                                  # back to healthy
    assert db.one(SNAPSHOT)["alert"]["severity"] == "recovered"
    uid = db.create_user()
    add_sms(db, uid, "failed", n=3)
    set_threshold(db, "failed_sms_24h", 3, 10)
    assert db.one(SNAPSHOT)["alert"]["severity"] == "warning"
    assert db.one(SNAPSHOT)["alert"] is None
    set_threshold(db, "failed_sms_24h", 1, 3)
    assert db.one(SNAPSHOT)["alert"]["severity"] == "critical"
    set_threshold(db, "failed_sms_24h", 1, 10)
    assert db.one(SNAPSHOT)["alert"]["severity"] == "warning"   # critical -> warning is a change too

    assert [s for s, _ in alerts(db)] == ["critical", "recovered", "warning", "critical", "warning"]
    assert [n["severity"] for n in listener.received()] == ["recovered", "warning", "critical", "warning"]
    assert db.one("select count(*) from public.system_health_snapshots") == 7
    assert "investigate_failed_sms" in alerts(db)[-1][1]


def test_first_healthy_snapshot_raises_no_alert(db, listener):
    add_config(db)
    report = db.one(SNAPSHOT)
    assert report["system_status"] == "healthy" and report["alert"] is None
    assert listener.received(0.3) == [] and alerts(db) == []
    stored = db.sql("select system_status, report from public.system_health_snapshots")
    assert stored == [("healthy", {k: v for k, v in report.items() if k not in ("snapshot_id", "alert")})]


def test_concurrent_snapshots_alert_once(db):
    barrier = threading.Barrier(4)
    results = []

    def record():
        with db.connect() as conn:
            barrier.wait()
            results.append(conn.execute(SNAPSHOT).fetchone()[0]["alert"])

    threads = [threading.Thread(target=record) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(1 for a in results if a) == 1
    assert len(alerts(db)) == 1


def test_snapshots_are_rolled_back_with_their_transaction(db, listener):
    with db.conn.transaction():
        db.one(SNAPSHOT)
        raise psycopg.Rollback
    assert listener.received(0.3) == [] and alerts(db) == []


def test_performance_sample_error_rate_counts_rolled_back_calls(db):
    """error_rate: critical calls that ended in an error (refusals excluded) over all of
    them since the previous sample, counted although every failing call rolled back."""
    sample = db.one(SAMPLE)
    assert sample["error_rate"] == 0 and sample["response_time_ms"] > 0
    assert sample["details"]["calls_since_previous"] == 0
    assert set(sample["details"]) >= {"health_check_ms", "app_queries_ms", "counters"}
    user = db.create_user()
    me = Caller.user(user)
    db.as_(me, "select public.request_credits(10)")                      # ok
    for bad in (None, 0, -1):                                           # 22023, rolled back
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            db.as_(me, "select public.request_credits(%s)", [bad])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):           # refusal, rolled back
        db.as_(Caller.user(db.create_user(status="suspended")), "select public.request_credits(10)")
    # Audit rows of the failures rolled back with them; the counters did not.
    assert db.one("select count(*) from public.function_call_audit where outcome <> 'ok'") == 0
    sample = db.one(SAMPLE)
    details = sample["details"]
    assert (details["calls_since_previous"], details["errors_since_previous"],
            details["refusals_since_previous"]) == (5, 3, 1)
    assert sample["error_rate"] == 0.6
    assert details["counters"]["request_credits"] == {"calls": 5, "errors": 3, "refusals": 1}
    stored = db.one("select error_rate from public.performance_samples order by id desc limit 1")
    assert float(stored) == 0.6
    assert db.one(SAMPLE)["error_rate"] == 0                            # nothing since


def test_performance_sample_measures_app_queries_on_real_data(db):
    uid = db.create_user()
    add_sms(db, uid, n=60)
    db.sql("insert into public.contacts (user_id, phone) select %s, '+2449' || lpad(i::text, 8, '0') "
           "from generate_series(1, 60) i", [uid])
    sample = db.one(SAMPLE)
    assert sample["details"]["app_queries_ms"] > 0 and sample["details"]["health_check_ms"] > 0


@pytest.mark.parametrize("sql", [SNAPSHOT, SAMPLE])
def test_monitoring_writers_are_service_role_only(db, sql):
    admin, user = db.create_user(admin=True), db.create_user()
    assert db.as_(SERVICE, sql)[0][0]
    for caller in (ANON, Caller.user(user), Caller.user(admin)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.as_(caller, sql)


def test_housekeeping_prunes_history_older_than_30_days(db):
    db.sql("insert into public.system_health_snapshots (checked_at, system_status) values "
           "(now() - interval '31 days', 'healthy'), (now() - interval '29 days', 'healthy')")
    db.sql("insert into public.performance_samples (sampled_at, response_time_ms) values "
           "(now() - interval '31 days', 1), (now() - interval '29 days', 1), (now(), 1)")
    db.sql("insert into public.system_alerts (created_at, severity, message) values "
           "(now() - interval '90 days', 'warning', 'old alerts stay')")
    result = db.one("select smsao.prune_housekeeping()")
    assert (result["system_health_snapshots"], result["performance_samples"]) == (1, 1)
    assert result["rate_limit_state"] == 0
    assert db.one("select count(*) from public.system_health_snapshots") == 1
    assert db.one("select count(*) from public.performance_samples") == 2
    assert db.one("select count(*) from public.system_alerts") == 1


def test_housekeeping_prunes_rate_limit_state_past_its_window(db):
    for uid in (db.create_user(), db.create_user()):
        db.as_(Caller.user(uid), "select public.enhanced_security_rate_limit('op', 5, 10)")
    db.sql("update smsao.rate_limit_keys set window_ends = now() - interval '1 second' "
           "where caller_key = (select min(caller_key) from smsao.rate_limit_keys)")
    assert db.one("select smsao.prune_housekeeping()")["rate_limit_state"] == 1
    assert db.one("select count(*) from smsao.rate_limit_keys") == 1
    assert db.one("select cardinality(ring) from smsao.rate_limit_keys") == 1   # the kept key keeps its attempt


def test_daily_maintenance_runs_retention_then_housekeeping(db):
    db.sql("insert into public.otp_codes (phone, code_hash, expires_at) values "
           "('+244900000001', 'x', now() - interval '3 hours'), ('+244900000001', 'y', now())")
    db.sql("insert into public.performance_samples (sampled_at, response_time_ms) values (now() - interval '40 days', 1)")
    db.sql("call smsao.run_daily_maintenance()")
    assert db.sql("select code_hash from public.otp_codes") == [("y",)]
    assert db.one("select count(*) from public.performance_samples") == 0


def test_compaction_keeps_every_value_and_shrinks_the_table(db):
    add_config(db)
    uid = db.create_user()
    # The user has sent before: a user's very first SMS records the `sent_sms` milestone, and
    # transactions recording the same first time serialise on it (issue 18).
    db.sql("insert into public.sms_logs (user_id, recipient, status) values (%s, '+244900000000', 'sent')", [uid])
    # Open transactions force extra shard rows (each writer skips rows another holds).
    conns = [db.connect() for _ in range(4)]
    for c in conns:
        c.autocommit = False
        c.execute("set local lock_timeout = '10s'")  # a writer that waits fails, never hangs the suite
        c.execute("insert into public.sms_logs (user_id, recipient, status) values (%s, '+244900000000', 'failed')", [uid])
    for c in conns:
        c.commit()
        c.close()
    # An hour bucket from three days ago that no reader needs any more.
    db.sql("insert into smsao.health_counters (metric, bucket, value) "
           "values ('sms', smsao.hour_bucket(now() - interval '3 days'), 5)")
    rows_before = db.one("select count(*) from smsao.health_counters")
    before = db.one("select public.production_system_health_check()")["metrics"]
    removed = db.one("select smsao.compact_health_counters()")
    assert removed >= 1 + 3 * 2          # the stale bucket, and three extra shards of two metrics
    assert db.one("select count(*) from smsao.health_counters") == rows_before - removed
    report, plain = health_and_counts(db)
    # The counter-derived metrics only: server gauges such as connection_usage move while
    # the closed connections' backends exit.
    counted = {name: report["metrics"][name] for name in METRIC_NAMES}
    assert counted == {name: before[name] for name in METRIC_NAMES} == plain
    assert counted["failed_sms_24h"] == 4 and report["metrics"]["sms_failure_rate"] == before["sms_failure_rate"]
    assert db.one("select count(*) from (select metric, bucket from smsao.health_counters "
                  "group by 1, 2 having count(*) > 1) x") == 0


def test_cron_job_definitions(db):
    jobs = {name: (schedule, command, runs_in) for name, schedule, command, runs_in in
            db.sql("select * from smsao.cron_jobs()")}
    assert jobs == {
        "smsao-health-check": ("*/5 * * * *", "select public.record_health_snapshot()", "target"),
        "smsao-performance-check": ("* * * * *", "select public.record_performance_sample()", "target"),
        "smsao-data-cleanup": ("0 3 * * *", "call smsao.run_daily_maintenance()", "target"),
        "smsao-cron-history-cleanup": ("30 3 * * *", jobs["smsao-cron-history-cleanup"][1], "cron"),
        # Where the server has pg_partman (revision 0011_scale installs it): its maintenance alone.
        **({"smsao-partman-maintenance": ("45 2 * * *", "call partman.run_maintenance_proc()", "target")}
           if db.one("select count(*) from pg_extension where extname = 'pg_partman'") else {}),
    }
    assert "cron.job_run_details" in jobs["smsao-cron-history-cleanup"][1]
    for name, (_, command, runs_in) in jobs.items():   # each target command runs as pg_cron would
        if runs_in == "target":
            db.sql(command)


def test_plpgsql_check_reports_nothing_on_the_monitoring_functions(db):
    db.sql("create extension if not exists plpgsql_check")
    problems = db.sql("""
      select p.oid::regprocedure::text, c.message
      from pg_proc p
      join pg_namespace n on n.oid = p.pronamespace
      left join pg_trigger t on t.tgfoid = p.oid
      cross join lateral plpgsql_check_function_tb(p.oid, coalesce(t.tgrelid, 0),
                                                   oldtable => t.tgoldtable, newtable => t.tgnewtable) c
      where n.nspname in ('smsao', 'public') and p.prolang = (select oid from pg_language where lanname = 'plpgsql')
        and p.proname ~ '(health|counter|count_|cleanup|retention|housekeeping|maintenance|record_|orphans|owner|operator)'
    """)
    assert problems == []


def schema_dump(url):
    out = subprocess.run([str(find_bindir() / "pg_dump"), "--schema-only", "--no-owner", url],
                         capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if not line.startswith(("--", "\\restrict", "\\unrestrict")))


def test_downgrade_removes_exactly_what_0003_added(empty_db_url):
    migrate.run("upgrade", empty_db_url, "0002_security")
    before = schema_dump(empty_db_url)
    migrate.run("upgrade", empty_db_url, "0003_monitoring")
    assert "health_counters" in schema_dump(empty_db_url)
    migrate.run("downgrade", empty_db_url, "0002_security")
    assert schema_dump(empty_db_url) == before
    migrate.run("upgrade", empty_db_url, "head")
