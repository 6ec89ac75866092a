"""Retention cleanup: exactly the three rules, batches, roles, concurrency and faults."""
import threading
import time

import psycopg
import pytest

from monitoring_support import add_otp, add_sms, health_and_counts
from support import ANON, SERVICE, Caller

AUDIT_TABLES = ("admin_audit_logs", "pii_access_audit", "function_call_audit")


def run_function(db):
    return db.one("select public.production_data_cleanup()")


def run_procedure(db, batch_size=5000):
    return db.one("call smsao.run_data_cleanup(%s::integer)", [batch_size])["total"]


def add_otp_expired(db, ago, n=1, user_id=None, tag="x"):
    db.sql("insert into public.otp_codes (user_id, phone, code_hash, expires_at, created_at) "
           "select %s, '+244900000001', %s, now() - %s::interval - g * interval '1 ms', "
           "now() - %s::interval - interval '10 minutes' from generate_series(1, %s) g", [user_id, tag, ago, ago, n])


def add_audit(db, table, ago, tag):
    columns = {"admin_audit_logs": "(action, created_at)", "pii_access_audit": "(table_name, created_at)",
               "function_call_audit": "(function_name, outcome, created_at)"}[table]
    values = "%s, now() - %s::interval" if table != "function_call_audit" else "%s, 'ok', now() - %s::interval"
    db.sql(f"insert into public.{table} {columns} values ({values})", [tag, ago])


def add_import_job(db, user_id, status, finished_ago, tag):
    completed = "null" if finished_ago is None else f"now() - '{finished_ago}'::interval"
    db.sql(f"insert into public.contact_import_jobs (user_id, status, file_name, completed_at) "
           f"values (%s, %s, %s, {completed})", [user_id, status, tag])


def seed_boundaries(db):
    """Rows on both sides of every rule. Tags: 'go' rows must be deleted, 'keep' rows kept."""
    uid = db.create_user()
    add_otp_expired(db, "2 hours 1 minute", tag="go")
    add_otp_expired(db, "3 days", n=3, user_id=uid, tag="go")
    add_otp_expired(db, "1 hour 59 minutes", tag="keep")
    add_otp_expired(db, "-10 minutes", tag="keep")        # still valid
    for table in AUDIT_TABLES:
        add_audit(db, table, "2 years 1 day", "go")
        add_audit(db, table, "2 years -1 day", "keep")
        add_audit(db, table, "1 minute", "keep")
    add_import_job(db, uid, "completed", "31 days", "go")
    add_import_job(db, uid, "failed", "31 days", "go")
    add_import_job(db, uid, "completed", "29 days", "keep")
    add_import_job(db, uid, "failed", "29 days", "keep")
    add_import_job(db, uid, "pending", None, "keep")
    add_import_job(db, uid, "pending", "400 days", "keep")     # odd, but only finished jobs ever go
    add_import_job(db, uid, "processing", "400 days", "keep")
    # Old rows of tables no rule covers.
    add_sms(db, uid, "failed", "5 years")
    db.sql("insert into public.system_health_snapshots (checked_at, system_status) values (now() - interval '3 years', 'healthy')")
    db.sql("insert into public.credit_requests (user_id, amount, created_at) values (%s, 5, now() - interval '3 years')", [uid])
    return uid


def tagged(db):
    """(tag, table) -> count of rows left."""
    rows = db.sql("""
      select 'otp_codes', code_hash, count(*) from public.otp_codes group by 2
      union all select 'admin_audit_logs', action, count(*) from public.admin_audit_logs group by 2
      union all select 'pii_access_audit', table_name, count(*) from public.pii_access_audit group by 2
      union all select 'function_call_audit', function_name, count(*) from public.function_call_audit group by 2
      union all select 'contact_import_jobs', file_name, count(*) from public.contact_import_jobs group by 2
    """)
    return {(table, tag): n for table, tag, n in rows}


KEPT = {("otp_codes", "keep"): 2, ("admin_audit_logs", "keep"): 2, ("pii_access_audit", "keep"): 2,
        ("function_call_audit", "keep"): 2, ("contact_import_jobs", "keep"): 5}


@pytest.mark.parametrize("run", [run_function, run_procedure], ids=["function", "procedure"])
def test_deletes_exactly_what_the_rules_say(db, run):
    seed_boundaries(db)
    report = db.one("select public.production_data_cleanup_report()")
    assert report["categories"] == {"otp_codes": 4, "admin_audit_logs": 1, "pii_access_audit": 1,
                                    "function_call_audit": 1, "contact_import_jobs": 2}
    assert report["total"] == 9 and report["dry_run"] is True
    assert tagged(db)[("otp_codes", "go")] == 4           # the report deleted nothing
    assert run(db) == 9
    assert tagged(db) == KEPT
    assert db.one("select count(*) from public.sms_logs") == 1
    assert db.one("select count(*) from public.system_health_snapshots") == 1
    assert db.one("select count(*) from public.credit_requests") == 1
    assert run(db) == 0


def test_procedure_reports_per_category_and_batches(db):
    seed_boundaries(db)
    add_otp_expired(db, "1 day", n=7, tag="go")
    report = db.one("call smsao.run_data_cleanup(3)")
    assert report["categories"]["otp_codes"] == 11 and report["total"] == 16
    assert report["batches"] == 4 + 1 + 1 + 1 + 1   # 11 OTPs in batches of 3 (3+3+3+2), one per other category
    assert report["dry_run"] is False and set(report["cutoffs"]) == set(report["categories"])


def test_many_rows_with_the_same_expiry_in_small_batches(db):
    """Keyset batches must not stop at, or loop on, a run of equal keys."""
    db.sql("insert into public.otp_codes (phone, code_hash, expires_at) "
           "select '+244900000001', 'go', date_trunc('day', now()) - interval '1 day' from generate_series(1, 25)")
    add_otp_expired(db, "1 hour", n=3, tag="keep")
    assert db.one("call smsao.run_data_cleanup(4)")["total"] == 25
    assert tagged(db) == {("otp_codes", "keep"): 3}


def test_only_cleanup_can_delete_audit_rows(db):
    seed_boundaries(db)
    with db.conn.transaction():
        assert run_function(db) == 9
        # The retention switch does not outlive the cleanup, even as the owner in the same transaction.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.sql("delete from public.admin_audit_logs")
        raise psycopg.Rollback
    # Setting the switch by hand does not give an app role the right to delete.
    with db.conn.transaction():
        db.sql("select set_config('smsao.audit_retention', 'on', true)")
        db.sql("set local role service_role")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.sql("delete from public.function_call_audit")
        raise psycopg.Rollback
    assert db.one("select count(*) from public.function_call_audit") == 3   # the rollback kept all


def test_roles(db):
    seed_boundaries(db)
    admin, user = db.create_user(admin=True), db.create_user()
    for sql in ("select public.production_data_cleanup()", "select public.production_data_cleanup_report()"):
        for caller in (ANON, Caller.user(user)):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.as_(caller, sql)
    assert db.as_(SERVICE, "select public.production_data_cleanup_report()")[0][0]["total"] == 9
    assert db.as_(Caller.user(admin), "select public.production_data_cleanup()")[0][0] == 9
    assert db.as_(SERVICE, "select public.production_data_cleanup()")[0][0] == 0
    # The committing procedure and its steps are the owner's (pg_cron, DBA), not the app's.
    for caller in (SERVICE, Caller.user(admin)):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.as_(caller, "select smsao.data_cleanup_step(null, 10)")
    with db.connect() as conn:
        conn.execute("set role service_role")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("call smsao.run_data_cleanup()")


@pytest.mark.parametrize("sql", ["call smsao.run_data_cleanup(0)", "call smsao.run_data_cleanup(-5)",
                                 "call smsao.run_data_cleanup(null)",
                                 "select smsao.cleanup_batch('profiles', now(), '-infinity', 10)",
                                 "select smsao.cleanup_batch('otp_codes', null, '-infinity', 10)"])
def test_bad_arguments(db, sql):
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        db.sql(sql)
    assert any(word in str(exc.value) for word in ("batch_size", "category", "cutoff"))


def test_app_writes_do_not_wait_for_an_open_cleanup(db):
    """Even the one-transaction function leaves fresh rows free while it holds its deletions."""
    seed_boundaries(db)
    add_otp(db, None, n=2)
    cleaner = db.connect()
    try:
        cleaner.autocommit = False
        assert cleaner.execute("select public.production_data_cleanup()").fetchone()[0] == 9
        with db.conn.transaction():
            db.sql("set local lock_timeout = '500ms'")
            add_otp(db, None)
            db.sql("update public.otp_codes set attempts = attempts + 1 where expires_at > now()")
            add_audit(db, "function_call_audit", "0 seconds", "keep")
            db.sql("insert into public.contact_import_jobs (user_id) select user_id from public.profiles limit 1")
        cleaner.commit()
    finally:
        cleaner.close()


def test_concurrent_inserts_of_fresh_rows_are_never_deleted(db):
    uid = db.create_user()
    add_otp_expired(db, "1 day", n=6000, user_id=uid, tag="go")
    for table in AUDIT_TABLES:
        db.sql(f"insert into public.{table} " + {
            "admin_audit_logs": "(action, created_at) select 'go', now() - interval '3 years' from generate_series(1, 1500)",
            "pii_access_audit": "(table_name, created_at) select 'go', now() - interval '3 years' from generate_series(1, 1500)",
            "function_call_audit": "(function_name, outcome, created_at) select 'go', 'ok', now() - interval '3 years' "
                                   "from generate_series(1, 1500)"}[table])
    stop = threading.Event()
    inserted = {"otp": 0, "audit": 0}
    errors = []

    def writer():
        with psycopg.connect(db.url, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    conn.execute("insert into public.otp_codes (user_id, phone, code_hash) values (%s, '+244900000001', 'fresh')", [uid])
                    conn.execute("insert into public.function_call_audit (function_name, outcome) values ('fresh', 'ok')")
                    inserted["otp"] += 1
                    inserted["audit"] += 1
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
                    return

    t = threading.Thread(target=writer)
    t.start()
    try:
        report = db.one("call smsao.run_data_cleanup(200)")
        deleted = report["total"]
    finally:
        stop.set()
        t.join()
    assert not errors and inserted["otp"] > 0
    assert deleted == 6000 + 3 * 1500, report["categories"]
    left = tagged(db)
    assert left == {("otp_codes", "fresh"): inserted["otp"], ("function_call_audit", "fresh"): inserted["audit"]}
    report, plain = health_and_counts(db)
    assert {k: report["metrics"][k] for k in plain} == plain


@pytest.mark.parametrize("path", ["procedure", "function"])
def test_killed_backend_mid_cleanup_keeps_everything_it_should(db, path):
    uid = db.create_user()
    add_otp_expired(db, "1 day", n=40000, user_id=uid, tag="go")
    add_otp_expired(db, "1 hour", n=500, user_id=uid, tag="keep")
    add_otp_expired(db, "-1 hour", n=500, tag="keep")
    for table in AUDIT_TABLES:
        add_audit(db, table, "700 days", "keep")
    add_import_job(db, uid, "completed", "29 days", "keep")
    sql = "call smsao.run_data_cleanup(100)" if path == "procedure" else "select public.production_data_cleanup()"
    cleaner = db.connect()
    pid = cleaner.info.backend_pid
    outcome = []

    def run():
        try:
            cleaner.execute(sql)
            outcome.append("finished")
        except psycopg.OperationalError:
            outcome.append("killed")

    t = threading.Thread(target=run)
    t.start()
    # Wait until the cleanup is visibly under way (procedure: batches committed;
    # function: the backend is busy deleting), then kill it.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if path == "procedure":
            if db.one("select count(*) from public.otp_codes where code_hash = 'go'") < 40000:
                break
        elif db.one("select count(*) from pg_locks where pid = %s and locktype = 'transactionid'", [pid]):
            break
        time.sleep(0.005)
    assert db.one("select pg_terminate_backend(%s)", [pid])
    t.join()
    cleaner.close()
    assert outcome == ["killed"]
    left = tagged(db)
    assert {k: v for k, v in left.items() if k[1] == "keep"} == {
        ("otp_codes", "keep"): 1000, ("admin_audit_logs", "keep"): 1, ("pii_access_audit", "keep"): 1,
        ("function_call_audit", "keep"): 1, ("contact_import_jobs", "keep"): 1}
    remaining = left.get(("otp_codes", "go"), 0)
    if path == "procedure":
        assert 0 < remaining < 40000          # committed batches stay deleted
    else:
        assert remaining == 40000             # one transaction: all or nothing
    report, plain = health_and_counts(db)
    assert {k: report["metrics"][k] for k in plain} == plain
    # A later run finishes the job.
    assert run_procedure(db) == remaining
