"""production_system_health_check(): exact metrics, thresholds, roles, live counters."""
import threading
import uuid

import psycopg
import pytest

from monitoring_support import (add_config, add_credit_request, add_otp, add_sms, delete_user, ghost,
                                health_and_counts, metrics, set_threshold)
from support import ANON, SERVICE, Caller

HEALTH = "select public.production_system_health_check()"


def seed(db):
    """A little of everything, including rows the metrics must not count."""
    add_config(db, active=True)
    add_config(db, active=False)
    alice, bob, carol = db.create_user(), db.create_user(), db.create_user()
    add_credit_request(db, alice, "pending", n=2)
    add_credit_request(db, bob, "approved")
    add_credit_request(db, bob, "rejected")
    add_sms(db, alice, "failed", "1 minute", n=3)
    add_sms(db, alice, "failed", "23 hours 59 minutes")
    add_sms(db, bob, "failed", "24 hours 1 minute")      # just outside the window
    add_sms(db, bob, "failed", "3 days", n=2)
    add_sms(db, bob, "delivered", "1 hour", n=5)
    add_sms(db, ghost(), "sent", "2 days", n=2)           # orphaned from the start
    add_otp(db, alice)
    add_otp(db, None, n=2)                                # phone-only OTPs are nobody's orphans
    add_otp(db, ghost())                                  # orphaned
    add_sms(db, carol, "queued", "5 minutes", n=4)
    add_otp(db, carol, n=2)
    delete_user(db, carol)                                # leaves 4 + 2 orphans
    return alice, bob


def test_metrics_are_exact_on_seeded_data(db):
    seed(db)
    report, plain = health_and_counts(db)
    m = report["metrics"]
    assert {k: m[k] for k in plain} == plain
    application = {k: m[k] for k in ("total_users", "active_sms_configs", "pending_credit_requests",
                                     "failed_sms_24h", "orphaned_data")}
    assert application == {"total_users": 2, "active_sms_configs": 1, "pending_credit_requests": 2,
                           "failed_sms_24h": 4, "orphaned_data": 2 + 1 + 4 + 2}
    assert report["details"]["orphaned_data"] == {"sms_logs": 6, "otp_codes": 3}
    assert set(report) >= {"timestamp", "system_status", "metrics", "recommendations"}
    assert report["system_status"] == "healthy" and report["recommendations"] == []


def test_failures_older_than_24_hours_are_not_counted(db):
    add_config(db)
    uid = db.create_user()
    add_sms(db, uid, "failed", "23 hours 59 minutes 30 seconds")
    add_sms(db, uid, "failed", "24 hours 0 minutes 30 seconds")
    add_sms(db, uid, "failed", "25 hours 30 minutes")
    assert metrics(db)["failed_sms_24h"] == 1


def test_metrics_follow_every_kind_of_change(db):
    alice, bob = seed(db)[0], db.create_user()
    before = metrics(db)
    # A delivery report turns a queued message into a failure, another one recovers.
    add_sms(db, bob, "queued", "2 minutes", n=2)
    db.sql("update public.sms_logs set status = 'failed' where user_id = %s and status = 'queued'", [bob])
    assert metrics(db)["failed_sms_24h"] == before["failed_sms_24h"] + 2
    db.sql("update public.sms_logs set status = 'delivered' where user_id = %s and status = 'failed' "
           "and created_at > now() - interval '1 hour'", [bob])
    assert metrics(db)["failed_sms_24h"] == before["failed_sms_24h"]
    # Approving a request leaves the pending count.
    db.sql("update public.credit_requests set status = 'approved', processed_at = now() "
           "where id = (select id from public.credit_requests where status = 'pending' limit 1)")
    assert metrics(db)["pending_credit_requests"] == before["pending_credit_requests"] - 1
    # Deleting orphans, moving a log to another owner, re-creating a deleted user.
    db.sql("delete from public.otp_codes where user_id is not null "
           "and not exists (select from public.profiles p where p.user_id = otp_codes.user_id)")
    gone = db.one("select user_id from public.sms_logs l where not exists "
                  "(select from public.profiles p where p.user_id = l.user_id) and status = 'queued' limit 1")
    db.sql("update public.sms_logs set user_id = %s where user_id = %s", [alice, gone])
    assert metrics(db)["orphaned_data"] == 2
    db.sql("update public.sms_logs set user_id = %s where id = (select min(id) from public.sms_logs "
           "where user_id = %s)", [gone, alice])
    assert metrics(db)["orphaned_data"] == 3
    db.sql("insert into auth.users (id, email) values (%s, 'back@test.ao')", [gone])
    report, plain = health_and_counts(db)
    assert {k: report["metrics"][k] for k in plain} == plain
    assert plain["orphaned_data"] == 2


def test_truncate_and_rekey_recount(db):
    seed(db)
    # A profile moved to another account: dave's rows lose their owner.
    dave, other = db.create_user(), db.create_user()
    add_sms(db, dave, n=2)
    add_otp(db, dave)
    db.sql("delete from public.profiles where user_id = %s", [other])
    db.sql("update public.profiles set user_id = %s where user_id = %s", [other, dave])
    report, plain = health_and_counts(db)
    assert {k: report["metrics"][k] for k in plain} == plain
    assert plain["orphaned_data"] == 9 + 3
    db.sql("truncate public.otp_codes")
    report, plain = health_and_counts(db)
    assert {k: report["metrics"][k] for k in plain} == plain
    db.sql("truncate public.sms_logs")
    report, plain = health_and_counts(db)
    assert {k: report["metrics"][k] for k in plain} == plain
    assert plain["orphaned_data"] == 0 and plain["failed_sms_24h"] == 0


def test_counts_do_not_depend_on_the_session_time_zone(db):
    add_config(db)
    uid = db.create_user()
    db.sql("set timezone = 'Asia/Kolkata'")   # a half-hour offset
    add_sms(db, uid, "failed", "23 hours 50 minutes", n=2)
    add_sms(db, uid, "failed", "30 minutes")
    report, plain = health_and_counts(db)
    db.sql("set timezone = 'UTC'")
    assert report["metrics"]["failed_sms_24h"] == plain["failed_sms_24h"] == 3


@pytest.mark.parametrize("metric, setup, warning_at, critical_at, code", [
    ("failed_sms_24h", lambda db, u: add_sms(db, u, "failed", "1 hour", n=3), 3, 4, "investigate_failed_sms"),
    ("sms_failure_rate", lambda db, u: (add_sms(db, u, "failed", "1 hour", n=3), add_sms(db, u, "sent", n=7)),
     0.3, 0.31, "investigate_failed_sms"),
    ("pending_credit_requests", lambda db, u: add_credit_request(db, u, n=3), 3, 4, "review_pending_credit_requests"),
    ("orphaned_data", lambda db, u: add_sms(db, ghost(), n=3), 3, 4, "cleanup_orphaned_data"),
])
def test_each_threshold_flips_the_status(db, metric, setup, warning_at, critical_at, code):
    add_config(db)
    setup(db, db.create_user())
    for m in ("failed_sms_24h", "sms_failure_rate", "pending_credit_requests", "orphaned_data"):
        set_threshold(db, m, None, None)
    report = db.one(HEALTH)
    assert (report["system_status"], report["recommendations"]) == ("healthy", [])

    set_threshold(db, metric, warning_at + 0.0001 if metric == "sms_failure_rate" else warning_at + 1)
    assert db.one(HEALTH)["system_status"] == "healthy"      # just below the threshold
    set_threshold(db, metric, warning_at)
    report = db.one(HEALTH)
    assert (report["system_status"], report["recommendations"]) == ("warning", [code])
    assert report["checks"][metric] == "warning"
    set_threshold(db, metric, warning_at, critical_at)
    assert db.one(HEALTH)["system_status"] == "warning"
    set_threshold(db, metric, warning_at, warning_at)
    report = db.one(HEALTH)
    assert (report["system_status"], report["recommendations"]) == ("critical", [code])


def test_failure_rate_needs_its_minimum_sample(db):
    add_config(db)
    uid = db.create_user()
    add_sms(db, uid, "failed", n=2)
    add_sms(db, uid, "sent", n=2)
    set_threshold(db, "failed_sms_24h", None, None)
    set_threshold(db, "sms_failure_rate", 0.1, 0.25, min_sample=5)
    assert db.one(HEALTH)["system_status"] == "healthy"      # 4 messages: not judged yet
    add_sms(db, uid, "sent")
    report = db.one(HEALTH)
    assert report["system_status"] == "critical"
    assert report["metrics"]["sms_failure_rate"] == 0.4
    assert report["details"]["sms_window"]["total"] == 5


def test_no_active_sms_configuration_is_always_critical(db):
    for m in ("failed_sms_24h", "sms_failure_rate", "pending_credit_requests", "orphaned_data"):
        set_threshold(db, m, None, None)
    add_config(db, active=False)
    report = db.one(HEALTH)
    assert report["system_status"] == "critical"
    assert report["recommendations"] == ["configure_sms_gateway"]
    db.sql("update public.sms_configurations set is_active = true")
    assert db.one(HEALTH)["system_status"] == "healthy"


def test_thresholds_table_rejects_nonsense(db):
    for sql in ["update smsao.health_thresholds set warning_at = -1 where metric = 'failed_sms_24h'",
                "update smsao.health_thresholds set warning_at = 10, critical_at = 5 where metric = 'failed_sms_24h'",
                "update smsao.health_thresholds set min_sample = -1 where metric = 'sms_failure_rate'",
                "insert into smsao.health_thresholds (metric, warning_at) values ('no_such_metric', 1)"]:
        with pytest.raises(psycopg.errors.CheckViolation):
            db.sql(sql)


def test_roles(db):
    add_config(db)
    admin, user = db.create_user(admin=True), db.create_user()
    suspended_admin = db.create_user(admin=True, status="suspended")
    assert db.as_(SERVICE, HEALTH)[0][0]["system_status"] == "healthy"
    assert db.as_(Caller.user(admin), HEALTH)[0][0]["metrics"]["total_users"] == 3
    for caller in (ANON, Caller.anon("203.0.113.7"), Caller.user(user), Caller.user(suspended_admin)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.as_(caller, HEALTH)
    # App roles cannot read or write the counters or the thresholds directly.
    for table in ("smsao.health_counters", "smsao.health_thresholds"):
        for caller in (SERVICE, Caller.user(admin)):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.as_(caller, f"select * from {table}")


def test_concurrent_writers_never_wait_on_the_counters(db):
    """Two open transactions that both insert SMS (and so both change the counters)."""
    add_config(db)
    uid = db.create_user()
    add = "insert into public.sms_logs (user_id, recipient, status) values (%s, '+244900000000', 'failed')"
    # The user has sent before: a user's very first SMS records the `sent_sms` milestone, and two
    # transactions recording the same user's first time serialise on it (issue 18).
    db.sql(add.replace("'failed'", "'sent'"), [uid])
    first, second = db.connect(), db.connect()
    try:
        first.autocommit = second.autocommit = False
        first.execute(add, [uid])
        second.execute("set local lock_timeout = '500ms'")
        second.execute(add, [uid])           # would time out on a single hot counter row
        second.execute("delete from public.sms_logs where user_id = %s", [uid])
        second.commit()
        first.commit()
    finally:
        first.close()
        second.close()
    assert metrics(db)["failed_sms_24h"] == 1


def test_counters_stay_exact_under_concurrent_owner_churn(db):
    """Writers add and remove SMS/OTP rows while their owners are deleted and re-created."""
    add_config(db)
    users = [db.create_user() for _ in range(4)]
    stop = threading.Event()
    errors = []

    def writer(seed):
        with db.connect() as conn:
            i = seed
            while not stop.is_set():
                uid = users[i % len(users)] if i % 5 else uuid.uuid4()
                i += 1
                try:
                    with conn.transaction():
                        conn.execute("insert into public.sms_logs (user_id, recipient, status) "
                                     "values (%s, '+244900000000', %s)", [uid, "failed" if i % 3 else "sent"])
                        conn.execute("insert into public.otp_codes (user_id, phone, code_hash) "
                                     "values (%s, '+244900000001', 'x')", [uid])
                        if i % 4 == 0:
                            conn.execute("delete from public.otp_codes where id = (select id from public.otp_codes "
                                         "where user_id = %s limit 1)", [users[(i + 1) % len(users)]])
                except psycopg.errors.DeadlockDetected:
                    pass   # a lost race is fine; a wrong counter is not
                except Exception as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return

    def churn():
        with db.connect() as conn:
            i = 0
            while not stop.is_set():
                uid = users[i % len(users)]
                i += 1
                try:
                    with conn.transaction():
                        conn.execute("delete from auth.users where id = %s", [uid])
                    with conn.transaction():
                        conn.execute("insert into auth.users (id, email) values (%s, %s)", [uid, f"{uid}@t.ao"])
                except psycopg.errors.DeadlockDetected:
                    pass
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)] + [threading.Thread(target=churn)]
    for t in threads:
        t.start()
    threading.Event().wait(4)
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    report, plain = health_and_counts(db)
    assert plain["orphaned_data"] > 0 and plain["failed_sms_24h"] > 0
    assert {k: report["metrics"][k] for k in plain} == plain
    # Shards stay bounded by the number of concurrent writers (4 writers + 1 churner).
    assert db.one("select max(n) from (select count(*) as n from smsao.health_counters "
                  "group by metric, bucket) x") <= 5
    # and an exact recount agrees with the counters
    recount = db.one("select smsao.recount_health_counters()")
    assert recount["orphaned_sms_logs"] + recount["orphaned_otp_codes"] == plain["orphaned_data"]
