"""Issue 11: the engine's and the scheduler's vital signs in the health check, each by
behaviour on a real server."""
from __future__ import annotations

import json
import threading
import time
import uuid

import psycopg
import pytest

from cli_support import smsao_db
from monitoring_support import STARTED_LONG_AGO, add_config, service_role_login
from runner import migrate
from runner.embedded import Cluster
from support import SERVICE, Caller, new_home, remove_new_home

VITALS = ("longest_transaction_s", "connection_usage", "xid_age_ratio", "blocked_sessions",
          "database_size_bytes", "health_snapshot_age_s", "cron_failures_1h", "security_refusals_1h")
CHECK = "select public.production_system_health_check()"
SNAPSHOT = "select public.record_health_snapshot()"


def report(db) -> dict:
    return db.one(CHECK)


def set_threshold(db, metric, warning_at=None, critical_at=None, grace_s=None) -> None:
    db.sql("update smsao.health_thresholds set warning_at = %s, critical_at = %s, "
           "grace_s = coalesce(%s, grace_s) where metric = %s", [warning_at, critical_at, grace_s, metric])


def test_the_report_carries_every_vital_sign_with_check_and_thresholds(db):
    add_config(db)
    r = report(db)
    for metric in VITALS:
        assert metric in r["metrics"] and r["checks"][metric] == "ok" and metric in r["thresholds"]
    m = r["metrics"]
    assert m["longest_transaction_s"] == 0 and m["blocked_sessions"] == 0
    assert 0 < m["connection_usage"] <= 1
    assert m["database_size_bytes"] == db.one("select pg_database_size(current_database())")
    worst = db.one("select max(age(datfrozenxid)) from pg_database")
    assert abs(m["xid_age_ratio"] - worst / 2**31) < 1e-4
    # No jobs scheduled for this database: the scheduler's metrics are not measurable.
    assert (m["health_snapshot_age_s"], m["cron_failures_1h"]) == (None, None)
    assert r["system_status"] == "healthy" and r["recommendations"] == []


def test_a_long_open_transaction_warns_alerts_and_recovers(db):
    add_config(db)
    db.one(SNAPSHOT)                                    # healthy baseline
    set_threshold(db, "longest_transaction_s", warning_at=1, critical_at=3600)
    idle = db.connect()
    idle.execute("begin")
    idle.execute("select txid_current()")              # idle in transaction from now on
    time.sleep(1.2)
    r = db.one(SNAPSHOT)
    assert r["metrics"]["longest_transaction_s"] >= 1
    assert (r["system_status"], r["checks"]["longest_transaction_s"]) == ("warning", "warning")
    assert r["recommendations"] == ["investigate_long_transactions"]
    assert r["alert"]["severity"] == "warning"
    idle.execute("rollback")
    idle.close()
    r = db.one(SNAPSHOT)
    assert r["system_status"] == "healthy" and r["alert"]["severity"] == "recovered"
    assert db.sql("select severity from public.system_alerts order by id") == [("warning",), ("recovered",)]


def test_a_session_blocked_past_the_grace_is_counted(db):
    add_config(db)
    uid = db.create_user()
    set_threshold(db, "blocked_sessions", warning_at=1, critical_at=10, grace_s=0.5)
    holder = db.connect()
    holder.execute("begin")
    holder.execute("update public.profiles set full_name = 'holder' where user_id = %s", [uid])
    waiter_done = threading.Event()

    def waiter():
        with db.connect() as conn:
            conn.execute("update public.profiles set full_name = 'waiter' where user_id = %s", [uid])
        waiter_done.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert report(db)["metrics"]["blocked_sessions"] == 0   # not past the grace yet
        time.sleep(1.0)
        r = report(db)
        assert r["metrics"]["blocked_sessions"] == 1
        assert r["checks"]["blocked_sessions"] == "warning" and "investigate_lock_waits" in r["recommendations"]
    finally:
        holder.execute("commit")
        holder.close()
        thread.join()
    assert waiter_done.is_set() and report(db)["metrics"]["blocked_sessions"] == 0


def test_connection_usage_has_its_threshold(db):
    add_config(db)
    set_threshold(db, "connection_usage", warning_at=0.0001, critical_at=1)
    r = report(db)
    assert r["checks"]["connection_usage"] == "warning" and "review_connection_pooling" in r["recommendations"]


def sample_an_hour_ago(db) -> None:
    """The per-minute sample that opened the last hour (the baseline of its counters)."""
    db.sql("insert into public.performance_samples (sampled_at, response_time_ms, details) "
           "values (now() - interval '61 minutes', 1, jsonb_build_object('counters', smsao.critical_counters_now()))")


def test_refusals_and_errors_that_rolled_back_are_counted(db):
    add_config(db)
    sample_an_hour_ago(db)
    suspended = Caller.user(db.create_user(status="suspended"))
    me = Caller.user(db.create_user())
    for _ in range(3):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.as_(suspended, "select public.request_credits(10)")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.as_(me, "select public.request_credits(0)")
    r = report(db)
    assert r["metrics"]["security_refusals_1h"] == 3
    assert r["details"]["critical_operations"]["request_credits"] == {"calls": 4, "errors": 1, "refusals": 3}
    set_threshold(db, "security_refusals_1h", warning_at=2, critical_at=100)
    r = report(db)
    assert r["checks"]["security_refusals_1h"] == "warning" and "investigate_refusals" in r["recommendations"]
    # A newer sample from the hour's start is the baseline: what came before it is not counted.
    sample_an_hour_ago(db)
    assert report(db)["metrics"]["security_refusals_1h"] == 0


def test_without_a_sample_from_an_hour_ago_the_last_hour_of_refusals_is_unknown(db):
    """Not every refusal ever: with no baseline at the hour's start, NULL and why."""
    add_config(db)
    suspended = Caller.user(db.create_user(status="suspended"))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.as_(suspended, "select public.request_credits(10)")
    db.sql("insert into public.performance_samples (sampled_at, response_time_ms, details) "
           "values (now() - interval '70 minutes', 1, jsonb_build_object('counters', '{}'::jsonb))")
    r = report(db)
    assert r["metrics"]["security_refusals_1h"] is None and r["checks"]["security_refusals_1h"] == "ok"
    assert "no performance sample from an hour ago" in r["details"]["unknown"]["security_refusals_1h"]
    assert r["details"]["critical_operations"] is None
    sample_an_hour_ago(db)
    assert report(db)["metrics"]["security_refusals_1h"] == 0


def test_refusals_per_hour_come_from_the_samples(db):
    suspended = Caller.user(db.create_user(status="suspended"))
    db.sql("insert into public.performance_samples (sampled_at, response_time_ms, details) "
           "values (date_trunc('hour', now()) - interval '90 minutes', 1, "
           "        jsonb_build_object('counters', smsao.critical_counters_now()))")
    db.one("select public.record_performance_sample()")   # taken now, still inside this hour
    for _ in range(2):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.as_(suspended, "select public.request_credits(10)")
    hours = db.sql("select hour, refusals from smsao.critical_calls_per_hour(3)")
    assert [h[1] for h in hours] == [None, 0, 2]


def test_scheduler_state_recorded_elsewhere_arms_the_dead_mans_switch(db):
    """pg_cron lives in another database here (as in this test cluster): the state that
    `smsao-db schedule apply` records tells the health check the jobs should be running."""
    add_config(db)
    db.sql("select smsao.record_schedule_state(true, 'postgres')")
    r = report(db)
    assert r["metrics"]["health_snapshot_age_s"] < 5 and r["metrics"]["cron_failures_1h"] is None
    db.sql(STARTED_LONG_AGO)
    db.sql("update smsao.scheduler_state set changed_at = now() - interval '11 minutes'")
    r = report(db)
    assert r["checks"]["health_snapshot_age_s"] == "critical" and r["recommendations"] == ["check_scheduler"]
    db.one(SNAPSHOT)                                       # the job ran again
    assert report(db)["checks"]["health_snapshot_age_s"] == "ok"
    db.sql("select smsao.record_schedule_state(false, 'postgres')")
    assert report(db)["metrics"]["health_snapshot_age_s"] is None


@pytest.fixture(scope="module")
def cron_home():
    """A cluster whose pg_cron lives in the package's own database (as on Supabase and in the
    embedded database), so the health check reads cron.job and its run history itself."""
    home = new_home("smsao-vitals-")
    cluster = Cluster(home=home, cron_database="smsao_vitals", settings={"fsync": "off"})
    cluster.start()
    try:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("create database smsao_vitals")
        url = cluster.url("smsao_vitals")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create extension pg_cron")
        migrate.run("upgrade", url, "head")
        yield url
    finally:
        cluster.stop()
        remove_new_home(home)


def test_stopped_or_failing_jobs_turn_the_scheduler_check_critical(cron_home):
    with psycopg.connect(cron_home, autocommit=True) as conn:
        conn.execute("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('g', 's', true)")
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        assert one(CHECK)["metrics"]["health_snapshot_age_s"] is None   # nothing scheduled yet
        # Scheduled (once a year, so it never runs during the test), the last snapshot old.
        conn.execute(STARTED_LONG_AGO)
        jobid = one("select cron.schedule('smsao-health-check', '0 0 1 1 *', 'select public.record_health_snapshot()')")
        conn.execute("insert into public.system_health_snapshots (checked_at, system_status) "
                     "values (now() - interval '11 minutes', 'healthy')")
        r = one(CHECK)
        assert r["metrics"]["health_snapshot_age_s"] >= 660 and r["metrics"]["cron_failures_1h"] == 0
        assert r["system_status"] == "critical" and r["recommendations"] == ["check_scheduler"]
        one(SNAPSHOT)
        assert one(CHECK)["system_status"] == "healthy"
        conn.execute("insert into cron.job_run_details (jobid, runid, status, start_time, end_time) "
                     "select %s, 900000 + i, 'failed', now() - interval '10 minutes', now() "
                     "from generate_series(1, 5) i", [jobid])
        r = one(CHECK)
        assert r["metrics"]["cron_failures_1h"] == 5 and r["checks"]["cron_failures_1h"] == "critical"
        conn.execute("select cron.unschedule(%s)", [jobid])
        assert one(CHECK)["metrics"]["cron_failures_1h"] is None


def test_without_pg_cron_the_scheduler_metrics_are_null_and_harmless():
    home = new_home("smsao-nocron-")
    cluster = Cluster(home=home, settings={"shared_preload_libraries": "''", "fsync": "off"})
    cluster.start()
    try:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("create database smsao")
        migrate.run("upgrade", cluster.url("smsao"), "head")
        with psycopg.connect(cluster.url("smsao"), autocommit=True) as conn:
            conn.execute("insert into public.sms_configurations (gateway_name, sender_id, is_active) "
                         "values ('g', 's', true)")
            conn.execute("select smsao.record_schedule_state(true, 'smsao')")
            r = conn.execute(CHECK).fetchone()[0]
    finally:
        cluster.stop()
        remove_new_home(home)
    assert (r["metrics"]["health_snapshot_age_s"], r["metrics"]["cron_failures_1h"]) == (None, None)
    assert r["system_status"] == "healthy"


def test_service_role_sees_the_same_report(db):
    add_config(db)
    assert set(db.as_(SERVICE, CHECK)[0][0]["metrics"]) >= set(VITALS)


def test_engine_vitals_are_unknown_not_zero_when_the_owner_cannot_see_other_sessions(db):
    """A managed service's admin role is no superuser: without pg_read_all_stats it sees no
    other role's transaction or backend type. The longest transaction and the connections in
    use are then null (unknown), and the report says why, rather than a reassuring 0."""
    add_config(db)
    blind = f"smsao_test_blind_{uuid.uuid4().hex[:8]}"
    owner = db.one("select proowner::regrole::text from pg_proc where oid = 'smsao.engine_vitals(interval)'::regprocedure")
    db.sql(f"create role {blind} nologin")
    db.sql(f"alter function smsao.engine_vitals(interval) owner to {blind}")
    set_threshold(db, "longest_transaction_s", warning_at=1, critical_at=3600)
    set_threshold(db, "blocked_sessions", warning_at=1, critical_at=10, grace_s=0.3)
    uid = db.create_user()
    idle, holder = db.connect(), db.connect()
    idle.execute("begin")
    idle.execute("select txid_current()")                # another role's transaction, idle from now on
    holder.execute("begin")
    holder.execute("update public.profiles set full_name = 'holder' where user_id = %s", [uid])
    waiter = threading.Thread(target=lambda: db.connect().execute(
        "update public.profiles set full_name = 'waiter' where user_id = %s", [uid]).connection.close())
    waiter.start()
    try:
        time.sleep(1.2)
        r = report(db)
        m = r["metrics"]
        assert (m["longest_transaction_s"], m["connection_usage"]) == (None, None)
        assert r["checks"]["longest_transaction_s"] == "ok" and r["checks"]["connection_usage"] == "ok"
        why = r["details"]["unknown"]
        engine_unknown = {"longest_transaction_s", "connection_usage"}
        # (The scheduler's figures are unknown here for reasons of their own: no jobs, no samples.)
        assert engine_unknown <= set(why) and not {"blocked_sessions", "xid_age_ratio"} & set(why)
        assert blind in why["longest_transaction_s"] and "pg_read_all_stats" in why["longest_transaction_s"]
        # What every role may read is still measured: locks, databases, the size.
        assert m["blocked_sessions"] == 1 and r["checks"]["blocked_sessions"] == "warning"
        assert m["database_size_bytes"] == db.one("select pg_database_size(current_database())")
        assert m["xid_age_ratio"] is not None
        cli = smsao_db("health", url=db.url)
        assert "Longest transaction" in cli.stdout and "unknown, role " + blind in " ".join(cli.stdout.split())
        # Granted the privilege, the same owner sees the open transaction.
        db.sql(f"grant pg_read_all_stats to {blind}")
        r = report(db)
        assert r["metrics"]["longest_transaction_s"] >= 1 and r["checks"]["longest_transaction_s"] == "warning"
        assert 0 < r["metrics"]["connection_usage"] <= 1 and not engine_unknown & set(r["details"]["unknown"])
    finally:
        holder.execute("rollback")
        waiter.join()
        idle.execute("rollback")
        for conn in (idle, holder):
            conn.close()
        db.sql(f"alter function smsao.engine_vitals(interval) owner to {owner}")
        db.sql(f"drop role {blind}")


def test_the_health_check_works_for_a_real_login_granted_only_service_role(db):
    """Not `set role` inside a superuser's session: a login of its own, as a DBA creates one
    for monitoring. The check runs as the package's owner, so the engine vitals are seen."""
    add_config(db)
    with service_role_login(db) as url:
        proc = smsao_db("health", "--json", url=url)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["system_status"] == "healthy" and set(r["metrics"]) >= set(VITALS)
    assert r["metrics"]["longest_transaction_s"] is not None and r["metrics"]["connection_usage"] > 0
