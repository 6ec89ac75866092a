"""Issue 8: the security layer's defects, each by behaviour (grants on both database shapes
are in test_rls_matrix.py, admission stamps and anon bounds in test_rate_limit.py,
rollback-proof error_rate in test_monitoring.py)."""
from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from support import SERVICE, Caller, begin_request, request

UPSERT = ("insert into public.contacts (user_id, name, phone) values (%s, %s, '+244911111111') "
          "on conflict (user_id, phone) do update set name = excluded.name")


def raises(db, caller, sql, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as exc:
        db.as_(caller, sql, params)
    return exc.value


def totals(db, operation: str) -> tuple[int, int, int]:
    return tuple(db.sql("select calls, errors, refusals from smsao.critical_call_totals() "
                        "where operation = %s", [operation])[0])


def limit(db, operation_type: str, max_attempts: int) -> None:
    db.sql("update smsao.operation_limits set max_attempts = %s where operation_type = %s",
           [max_attempts, operation_type])


# -- 2. no self-approval ----------------------------------------------------------------

@pytest.mark.parametrize("decide", ["select public.approve_credit_request(%s)",
                                    "select public.reject_credit_request(%s, 'mine')"])
def test_an_admin_never_decides_their_own_credit_request(db, decide):
    admin_id = db.create_user(admin=True)
    me = Caller.user(admin_id)
    request_id = db.as_(me, "select public.request_credits(1000000)")[0][0]
    err = raises(db, me, decide, [request_id])
    assert err.sqlstate == "42501" and "own credit request" in str(err)
    assert db.one("select status from public.credit_requests") == "pending"
    assert db.one("select credits from public.profiles where user_id = %s", [admin_id]) == 0
    assert db.one("select count(*) from public.admin_audit_logs") == 0
    # Another admin may.
    db.as_(Caller.user(db.create_user(admin=True)), "select public.approve_credit_request(%s)", [request_id])
    assert db.one("select credits from public.profiles where user_id = %s", [admin_id]) == 1000000
    old, new = db.sql("select old_values, new_values from public.admin_audit_logs")[0]
    assert (old["credits"], new["credits"]) == (0, 1000000)


# -- 3. one statement, one attempt ------------------------------------------------------

def test_an_upsert_is_one_attempt(db):
    uid = db.create_user()
    me = Caller.user(uid)
    limit(db, "contact_operation", 3)
    for name in ("a", "b", "c"):                     # the first inserts, the others update
        db.as_(me, UPSERT, [uid, name])
    assert db.one("select name from public.contacts") == "c"
    assert raises(db, me, UPSERT, [uid, "d"]).sqlstate == "PT429"
    assert totals(db, "contact_operation") == (4, 0, 1)


def test_thirty_upserts_fit_a_limit_of_sixty(db):
    uid = db.create_user()
    me = Caller.user(uid)
    for i in range(30):
        db.as_(me, UPSERT, [uid, f"n{i}"])
    assert db.one("select admitted from smsao.rate_limit_keys where operation_type = 'contact_operation'") == 30


def test_an_insert_and_an_update_are_two_attempts_even_in_one_transaction(db):
    uid = db.create_user()
    me = Caller.user(uid)
    limit(db, "contact_operation", 2)
    with db.conn.transaction():
        begin_request(db.conn, me)
        db.conn.execute("insert into public.contacts (user_id, phone) values (%s, '+244922222222')", [uid])
        db.conn.execute("update public.contacts set name = 'x' where user_id = %s", [uid])
    assert raises(db, me, "update public.contacts set name = 'y' where user_id = %s", [uid]).sqlstate == "PT429"


def test_the_statement_gate_cannot_be_called_or_skipped_by_hand(db):
    uid = db.create_user()
    me = Caller.user(uid)
    err = raises(db, me, "select smsao.guard_app_statement('contacts', 'UPDATE', 'contact_operation')")
    assert err.sqlstate == "42501"
    assert raises(db, me, "select smsao.guard_critical('x', 'contact_operation', '{}')").sqlstate == "42501"
    limit(db, "contact_operation", 1)
    db.as_(me, "insert into public.contacts (user_id, phone) values (%s, '+244933333333')", [uid])
    # A setting forged by the session changes nothing: the upsert mark is a row only the gate writes.
    with pytest.raises(psycopg.Error) as exc, db.conn.transaction():
        begin_request(db.conn, me)
        db.conn.execute("select set_config('smsao.upsert', 'on', true), set_config('smsao.upsert_mark', 'on', true)")
        db.conn.execute("update public.contacts set name = 'x' where user_id = %s", [uid])
    assert exc.value.sqlstate == "PT429"


# -- 5. refusals and errors survive the rollback ----------------------------------------

def test_refused_statements_are_counted_though_they_roll_back(db):
    uid = db.create_user()
    me = Caller.user(uid)
    limit(db, "contact_operation", 1)
    db.as_(me, "insert into public.contacts (user_id, phone) values (%s, '+244944444444')", [uid])
    for _ in range(3):
        assert raises(db, me, "delete from public.contacts").sqlstate == "PT429"
    suspended = Caller.user(db.create_user(status="suspended"))
    assert raises(db, suspended, "delete from public.contacts").sqlstate == "42501"
    assert totals(db, "contact_operation") == (5, 0, 4)
    assert db.one("select count(*) from public.contacts") == 1


def test_concurrent_refusals_are_all_counted(db):
    uid = db.create_user()
    me = Caller.user(uid)
    limit(db, "financial_transaction", 2)
    go = threading.Barrier(6)
    outcomes = []

    def call():
        with db.connect() as conn:
            go.wait()
            for _ in range(5):
                try:
                    request(conn, me, "select public.request_credits(10)")
                    outcomes.append("ok")
                except psycopg.Error as exc:
                    outcomes.append(exc.sqlstate)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 2 and outcomes.count("PT429") == 28
    assert totals(db, "request_credits") == (30, 0, 28)


# -- 7. service_role is not throttled ---------------------------------------------------

def test_service_role_is_not_rate_limited(db):
    limit(db, "admin_access", 2)
    users = [db.create_user() for _ in range(5)]
    for uid in users:
        db.as_(SERVICE, "select public.admin_set_user_status(%s, 'suspended')", [uid])
    assert db.one("select count(*) from public.profiles where status = 'suspended'") == 5
    assert db.one("select count(*) from smsao.rate_limit_keys") == 0
    admin = Caller.user(db.create_user(admin=True))
    for uid in users[:2]:
        db.as_(admin, "select public.admin_set_user_status(%s, 'active')", [uid])
    assert raises(db, admin, "select public.admin_set_user_status(%s, 'active')", [users[2]]).sqlstate == "PT429"


# -- 8. a user who is not active writes nothing -----------------------------------------

@pytest.mark.parametrize("status", ["suspended", "pending", "deleted"])
def test_inactive_users_write_nothing(db, status):
    uid = db.create_user()
    db.sql("insert into public.campaigns (user_id, name) values (%s, 'before')", [uid])
    db.sql("update public.profiles set status = %s where user_id = %s", [status, uid])
    me = Caller.user(uid)
    for sql in ("insert into public.campaigns (user_id, name) values (%(u)s, 'new')",
                "insert into public.contact_import_jobs (user_id) values (%(u)s)",
                "insert into public.contacts (user_id, phone) values (%(u)s, '+244955555555')",
                "update public.profiles set full_name = 'x' where user_id = %(u)s",
                "select public.request_credits(10)"):
        assert raises(db, me, sql, {"u": uid}).sqlstate == "42501", sql
    for sql in ("update public.campaigns set name = 'changed' where user_id = %(u)s",
                "delete from public.campaigns where user_id = %(u)s"):
        db.as_(me, sql, {"u": uid})
    assert db.sql("select name from public.campaigns") == [("before",)]
    assert db.one("select count(*) from public.contact_import_jobs") == 0
    # Reading their own rows is still allowed.
    assert db.as_(me, "select name from public.campaigns") == [("before",)]


# -- 9. admins reach PII only through audited paths -------------------------------------

def test_admins_read_other_profiles_only_through_audited_functions(db):
    admin_id = db.create_user(admin=True)
    admin = Caller.user(admin_id)
    other = db.create_user(email="someone@test.ao", phone="+244966666666")
    assert db.as_(admin, "select email, phone from public.profiles where user_id = %s", [other]) == []
    assert db.as_(admin, "select user_id from public.profiles") == [(admin_id,)]
    listed = db.as_(admin, "select * from public.admin_list_users(50, 1)")
    columns = {d.name for d in db.conn.execute("select * from public.admin_list_users(1, 1) limit 0").description}
    assert {"email", "phone", "full_name"}.isdisjoint(columns)
    assert {r[0] for r in listed} == {admin_id, other}
    assert db.one("select count(*) from public.pii_access_audit") == 0
    details = db.as_(admin, "select public.admin_get_user_details(%s)", [other])[0][0]
    assert (details["email"], details["phone"]) == ("someone@test.ao", "+244966666666")
    assert db.sql("select accessor_id, subject_user_id from public.pii_access_audit") == [(admin_id, other)]


def test_admin_list_users_is_for_admins_and_checks_its_arguments(db):
    user = Caller.user(db.create_user())
    assert raises(db, user, "select * from public.admin_list_users()").sqlstate == "42501"
    admin = Caller.user(db.create_user(admin=True))
    for args, argument in (([0, 1], "page_size"), ([None, 1], "page_size"), ([10, 0], "page")):
        err = raises(db, admin, "select * from public.admin_list_users(%s, %s)", args)
        assert err.sqlstate == "22023" and argument in str(err)
    for _ in range(3):
        db.create_user()
    page2 = db.as_(admin, "select user_id from public.admin_list_users(2, 2)")
    page1 = db.as_(admin, "select user_id from public.admin_list_users(2, 1)")
    assert len(page1) == len(page2) == 2 and not set(page1) & set(page2)


# -- 10. smaller ones ---------------------------------------------------------------------

def test_refusals_are_logged_with_their_arguments_redacted(db, cluster):
    marker = uuid.uuid4().hex
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.sql("select smsao.refuse(%s, jsonb_build_object('otp_code', '987654', 'amount', 5), "
               "'denied', '42501', 'no')", [marker])
    logged = [line for line in cluster.log_file.read_text().splitlines() if marker in line]
    assert logged and '"otp_code": "[redacted]"' in logged[0] and "987654" not in logged[0]


def test_cleanup_batches_are_bounded_by_rows_when_many_share_a_timestamp(db):
    db.sql("insert into public.otp_codes (phone, code_hash, expires_at) "
           "select '+244900000001', 'x', timestamptz '2020-01-01' from generate_series(1, 12)")
    first = db.sql("select * from smsao.cleanup_batch('otp_codes', now(), '-infinity', 5)")[0]
    assert first == (0, db.one("select timestamptz '2020-01-01'"), False)   # up to the shared key
    deleted = []
    resume = first[1]
    while True:
        n, resume, finished = db.sql("select * from smsao.cleanup_batch('otp_codes', now(), %s, 5)", [resume])[0]
        deleted.append(n)
        if finished:
            break
    assert deleted == [5, 5, 2]


def test_cron_history_cleanup_also_deletes_runs_that_never_ended(db, cluster):
    command = db.one("select command from smsao.cron_jobs() where jobname = 'smsao-cron-history-cleanup'")
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as cron:
        cron.execute("delete from cron.job_run_details where jobid = 999999")
        cron.execute("""insert into cron.job_run_details (jobid, runid, status, start_time, end_time) values
                        (999999, 9999991, 'failed', now() - interval '8 days', null),
                        (999999, 9999992, 'succeeded', now() - interval '8 days', now() - interval '8 days'),
                        (999999, 9999993, 'running', now() - interval '1 day', null)""")
        cron.execute(command)
        left = cron.execute("select runid from cron.job_run_details where jobid = 999999").fetchall()
        cron.execute("delete from cron.job_run_details where jobid = 999999")
    assert left == [(9999993,)]
