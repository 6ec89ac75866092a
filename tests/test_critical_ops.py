import threading
import time
import uuid

import psycopg
import pytest

from support import ANON, SERVICE, Caller, request


def raises(db, caller, sql, params=None) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as exc:
        db.as_(caller, sql, params)
    return exc.value


def count(db, table, where="true", params=None) -> int:
    return db.one(f"select count(*) from {table} where {where}", params)


def ledger_matches_balances(db) -> bool:
    return db.one("""select bool_and(p.credits = coalesce(
                       (select sum(t.amount) from public.credit_transactions t where t.user_id = p.user_id), 0))
                     from public.profiles p""")


@pytest.fixture
def admin(db):
    return Caller.user(db.create_user(admin=True))


@pytest.fixture
def user_id(db):
    return db.create_user()


def request_credits(db, user_id, amount=100) -> uuid.UUID:
    return db.as_(Caller.user(user_id), "select public.request_credits(%s)", [amount])[0][0]


# -- request_credits ---------------------------------------------------------------

def test_request_credits_creates_pending_request_and_audits(db, user_id):
    rid = request_credits(db, user_id, 250)
    assert db.sql("select user_id, amount, status from public.credit_requests where id = %s", [rid]) == \
        [(user_id, 250, "pending")]
    assert db.sql("select caller_id, caller_role, function_name, outcome, arguments->>'amount' "
                  "from public.function_call_audit") == \
        [(user_id, "authenticated", "request_credits", "ok", "250")]
    assert db.one("select duration_ms >= 0 from public.function_call_audit")


@pytest.mark.parametrize("amount", [None, 0, -5, 1_000_001, 2_147_483_647])
def test_request_credits_bad_amount(db, user_id, amount):
    err = raises(db, Caller.user(user_id), "select public.request_credits(%s)", [amount])
    assert err.sqlstate == "22023" and "amount" in str(err)
    assert count(db, "public.credit_requests") == 0
    assert count(db, "smsao.rate_limit_keys") == 0  # a malformed call uses up no attempt


def test_request_credits_wrong_type(db, user_id):
    err = raises(db, Caller.user(user_id), "select public.request_credits('lots')")
    assert err.sqlstate == "22P02"


@pytest.mark.parametrize("make_caller", [
    lambda db: ANON,
    lambda db: Caller.user(db.create_user(status="suspended")),
    lambda db: Caller.user(db.create_user(), exp=int(time.time()) - 60),
    lambda db: Caller.user(db.create_user(), session_id=db.create_session(db.create_user())),
])
def test_request_credits_invalid_session_denied(db, make_caller):
    err = raises(db, make_caller(db), "select public.request_credits(100)")
    assert err.sqlstate == "42501"
    assert count(db, "public.credit_requests") == 0


def test_request_credits_rate_limited_after_five_per_hour(db, user_id):
    for _ in range(5):
        request_credits(db, user_id)
    err = raises(db, Caller.user(user_id), "select public.request_credits(100)")
    assert err.sqlstate == "PT429" and "financial_transaction" in str(err)
    assert count(db, "public.credit_requests") == 5
    # Another user is not affected.
    request_credits(db, db.create_user())


def test_request_credits_not_for_service_role(db):
    err = raises(db, SERVICE, "select public.request_credits(100)")
    assert err.sqlstate == "42501"


# -- approve / reject --------------------------------------------------------------

def test_approve_adds_credits_once_with_ledger_and_audit(db, admin, user_id):
    rid = request_credits(db, user_id, 300)
    db.as_(admin, "select public.approve_credit_request(%s)", [rid])
    assert db.one("select credits from public.profiles where user_id = %s", [user_id]) == 300
    assert db.sql("select amount, kind, credit_request_id from public.credit_transactions") == \
        [(300, "credit_request", rid)]
    assert db.sql("select status, processed_by is not null, processed_at is not null "
                  "from public.credit_requests") == [("approved", True, True)]
    action, old, new = db.sql("select action, old_values, new_values from public.admin_audit_logs")[0]
    assert action == "approve_credit_request"
    assert old == {"status": "pending", "credits": 0}
    assert new["status"] == "approved" and new["credits"] == 300

    err = raises(db, admin, "select public.approve_credit_request(%s)", [rid])
    assert err.sqlstate == "55000"
    err = raises(db, admin, "select public.reject_credit_request(%s, 'late')", [rid])
    assert err.sqlstate == "55000"
    assert db.one("select credits from public.profiles where user_id = %s", [user_id]) == 300
    assert ledger_matches_balances(db)


def test_rejected_request_cannot_change_again(db, admin, user_id):
    rid = request_credits(db, user_id)
    db.as_(admin, "select public.reject_credit_request(%s, %s)", [rid, "  no proof of payment "])
    assert db.sql("select status, reason from public.credit_requests") == [("rejected", "no proof of payment")]
    for sql in ("select public.approve_credit_request(%s)", "select public.reject_credit_request(%s, 'again')"):
        assert raises(db, admin, sql, [rid]).sqlstate == "55000"
    assert db.one("select credits from public.profiles where user_id = %s", [user_id]) == 0
    assert count(db, "public.admin_audit_logs") == 1


def test_concurrent_approvals_add_credits_exactly_once(db, user_id):
    rid = request_credits(db, user_id, 500)
    admins = [Caller.user(db.create_user(admin=True)) for _ in range(8)]
    start = threading.Barrier(len(admins))
    outcomes = []

    def approve(caller):
        with db.connect() as conn:
            start.wait()
            try:
                request(conn, caller, "select public.approve_credit_request(%s)", [rid])
                outcomes.append("ok")
            except psycopg.Error as exc:
                outcomes.append(exc.sqlstate)

    threads = [threading.Thread(target=approve, args=(a,)) for a in admins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["55000"] * 7 + ["ok"]
    assert db.one("select credits from public.profiles where user_id = %s", [user_id]) == 500
    assert count(db, "public.credit_transactions") == 1
    assert ledger_matches_balances(db)


def test_only_admins_decide(db, user_id):
    rid = request_credits(db, user_id)
    for caller in (Caller.user(user_id), Caller.user(db.create_user()), ANON,
                   Caller.user(db.create_user(admin=True, status="suspended"))):
        err = raises(db, caller, "select public.approve_credit_request(%s)", [rid])
        assert err.sqlstate == "42501"
    db.as_(SERVICE, "select public.approve_credit_request(%s)", [rid])  # the trusted backend
    assert db.one("select status from public.credit_requests") == "approved"


@pytest.mark.parametrize("sql, params, argument", [
    ("select public.approve_credit_request(%s)", [None], "request_id"),
    ("select public.approve_credit_request(%s)", [uuid.uuid4()], "request_id"),
    ("select public.reject_credit_request(%s, 'x')", [None], "request_id"),
    ("select public.reject_credit_request(%s, %s)", ["REQ", None], "reason"),
    ("select public.reject_credit_request(%s, %s)", ["REQ", "   "], "reason"),
    ("select public.reject_credit_request(%s, %s)", ["REQ", "x" * 501], "reason"),
])
def test_decision_bad_input(db, admin, user_id, sql, params, argument):
    rid = request_credits(db, user_id)
    params = [rid if p == "REQ" else p for p in params]
    err = raises(db, admin, sql, params)
    assert err.sqlstate == "22023" and argument in str(err)
    assert db.one("select status from public.credit_requests") == "pending"
    assert count(db, "public.admin_audit_logs") == 0


def test_malformed_admin_calls_use_up_no_attempt(db, admin, user_id):
    for sql, params in [("select public.approve_credit_request(%s)", [None]),
                        ("select public.reject_credit_request(%s, %s)", [uuid.uuid4(), ""]),
                        ("select public.admin_set_user_status(%s, %s)", [user_id, "banned"]),
                        ("select public.admin_get_user_details(%s)", [None])]:
        assert raises(db, admin, sql, params).sqlstate == "22023"
    assert count(db, "smsao.rate_limit_keys", "operation_type = 'admin_access'") == 0


def test_admin_access_rate_limited(db, admin, user_id):
    db.sql("update smsao.operation_limits set max_attempts = 3 where operation_type = 'admin_access'")
    for _ in range(3):
        db.as_(admin, "select public.admin_get_user_details(%s)", [user_id])
    err = raises(db, admin, "select public.admin_get_user_details(%s)", [user_id])
    assert err.sqlstate == "PT429" and "admin_access" in str(err)


# -- admin_set_user_status / admin_get_user_details ----------------------------------

def test_set_user_status_changes_and_audits(db, admin, user_id):
    db.as_(admin, "select public.admin_set_user_status(%s, 'suspended')", [user_id])
    assert db.one("select status from public.profiles where user_id = %s", [user_id]) == "suspended"
    assert db.sql("select admin_id, action, target_table, target_id, old_values, new_values "
                  "from public.admin_audit_logs") == \
        [(admin.sub, "admin_set_user_status", "profiles", str(user_id), {"status": "active"}, {"status": "suspended"})]
    # A suspended user's session is no longer valid.
    assert raises(db, Caller.user(user_id), "select public.request_credits(1)").sqlstate == "42501"


@pytest.mark.parametrize("params, argument", [
    ([None, "active"], "user_id"), (["USER", None], "status"), (["USER", "banned"], "status"),
    ([uuid.uuid4(), "active"], "user_id"), (["SELF", "suspended"], "user_id"),
])
def test_set_user_status_bad_input(db, admin, user_id, params, argument):
    params = [user_id if p == "USER" else admin.sub if p == "SELF" else p for p in params]
    err = raises(db, admin, "select public.admin_set_user_status(%s, %s)", params)
    assert err.sqlstate == "22023" and argument in str(err)
    assert count(db, "public.admin_audit_logs") == 0
    assert count(db, "public.profiles", "status <> 'active'") == 0


def test_get_user_details_returns_pii_and_audits_access(db, admin):
    uid = db.create_user(phone="+244923456789", email="maria@example.ao")
    details = db.as_(admin, "select public.admin_get_user_details(%s)", [uid])[0][0]
    assert details["phone"] == "+244923456789" and details["email"] == "maria@example.ao"
    assert details["roles"] == ["user"]
    assert db.sql("select accessor_id, subject_user_id, table_name, fields, purpose from public.pii_access_audit") == \
        [(admin.sub, uid, "profiles", ["full_name", "email", "phone"], "admin_get_user_details")]


def test_get_user_details_denied_to_users(db, user_id):
    other = db.create_user()
    err = raises(db, Caller.user(user_id), "select public.admin_get_user_details(%s)", [other])
    assert err.sqlstate == "42501"
    assert count(db, "public.pii_access_audit") == 0


# -- direct writes through RLS: profiles and contacts --------------------------------

def test_profile_self_update_gated_and_rate_limited(db, user_id):
    me = Caller.user(user_id)
    for i in range(10):
        db.as_(me, "update public.profiles set full_name = %s where user_id = %s", [f"Name {i}", user_id])
    err = raises(db, me, "update public.profiles set full_name = 'eleven' where user_id = %s", [user_id])
    assert err.sqlstate == "PT429" and "profile_update" in str(err)
    assert db.one("select full_name from public.profiles where user_id = %s", [user_id]) == "Name 9"


def test_profile_update_with_expired_token_denied(db, user_id):
    err = raises(db, Caller.user(user_id, exp=int(time.time()) - 5),
                 "update public.profiles set full_name = 'x' where user_id = %s", [user_id])
    assert err.sqlstate == "42501"


def test_admin_actions_do_not_count_as_profile_updates(db, admin, user_id):
    db.sql("update smsao.operation_limits set max_attempts = 1 where operation_type = 'profile_update'")
    db.as_(admin, "select public.admin_set_user_status(%s, 'suspended')", [user_id])
    db.as_(admin, "select public.admin_set_user_status(%s, 'active')", [user_id])
    db.as_(Caller.user(user_id), "update public.profiles set full_name = 'ok' where user_id = %s", [user_id])


def test_contact_import_is_one_attempt(db, user_id):
    me = Caller.user(user_id)
    db.as_(me, "insert into public.contacts (user_id, name, phone) "
               "select %s, 'c' || i, '+2449' || lpad(i::text, 8, '0') from generate_series(1, 5000) i", [user_id])
    assert count(db, "public.contacts") == 5000
    assert db.one("select admitted from smsao.rate_limit_keys where operation_type = 'contact_operation'") == 1


def test_contact_operations_rate_limited_per_statement(db, user_id):
    db.sql("update smsao.operation_limits set max_attempts = 3 where operation_type = 'contact_operation'")
    me = Caller.user(user_id)
    db.as_(me, "insert into public.contacts (user_id, phone) values (%s, '+244911111111')", [user_id])
    db.as_(me, "update public.contacts set name = 'A' where user_id = %s", [user_id])
    db.as_(me, "delete from public.contacts where name = 'nobody'")
    err = raises(db, me, "delete from public.contacts where user_id = %s", [user_id])
    assert err.sqlstate == "PT429"
    assert count(db, "public.contacts") == 1


def test_contacts_need_a_valid_session(db):
    me = Caller.user(db.create_user(status="suspended"))
    err = raises(db, me, "insert into public.contacts (user_id, phone) values (%s, '+244911111111')", [me.sub])
    assert err.sqlstate == "42501"


def test_backend_writes_are_not_gated(db, user_id):
    db.sql("update smsao.operation_limits set max_attempts = 1 where operation_type = 'contact_operation'")
    for i in range(3):
        db.as_(SERVICE, "insert into public.contacts (user_id, phone) values (%s, %s)", [user_id, f"+24491111111{i}"])
    assert count(db, "public.contacts") == 3


# -- audit trails are append-only ----------------------------------------------------

@pytest.mark.parametrize("table", ["function_call_audit", "admin_audit_logs", "pii_access_audit"])
@pytest.mark.parametrize("statement", ["update public.{t} set created_at = now()",
                                       "delete from public.{t}", "truncate public.{t}"])
def test_audit_rows_cannot_be_tampered_with(db, admin, user_id, table, statement):
    db.as_(admin, "select public.admin_get_user_details(%s)", [user_id])
    db.as_(admin, "select public.admin_set_user_status(%s, 'pending')", [user_id])
    before = count(db, f"public.{table}")
    assert before > 0
    for caller in (admin, Caller.user(user_id), SERVICE, ANON):
        assert raises(db, caller, statement.format(t=table)).sqlstate == "42501"
    with pytest.raises(psycopg.Error) as exc:  # not even the owner
        db.sql(statement.format(t=table))
    assert exc.value.sqlstate == "42501"
    assert count(db, f"public.{table}") == before


def test_audit_arguments_hide_secrets(db, user_id):
    db.sql("select smsao.audit_call('send_otp', %s, 'ok', now())",
           ['{"phone": "+244900000000", "code": "123456", "api_key": "k", "otp_code": "9"}'])
    assert db.one("select arguments from public.function_call_audit") == \
        {"phone": "+244900000000", "code": "[redacted]", "api_key": "[redacted]", "otp_code": "[redacted]"}


# -- grants and search_path ----------------------------------------------------------

CONTRACT_GRANTS = {
    "enhanced_security_rate_limit": {"anon", "authenticated", "service_role"},
    "validate_user_session": {"anon", "authenticated", "service_role"},
    "has_role": {"authenticated", "service_role"},
    "request_credits": {"authenticated"},
    "approve_credit_request": {"authenticated", "service_role"},
    "reject_credit_request": {"authenticated", "service_role"},
    "admin_set_user_status": {"authenticated", "service_role"},
    "admin_get_user_details": {"authenticated", "service_role"},
}


def test_function_grants_are_exactly_the_contracts(db):
    for name, roles in CONTRACT_GRANTS.items():
        granted = {r for r in ("anon", "authenticated", "service_role")
                   if db.one("select bool_or(has_function_privilege(%s, p.oid, 'execute')) "
                             "from pg_proc p where p.proname = %s and p.pronamespace = 'public'::regnamespace",
                             [r, name])}
        assert granted == roles, name


def test_no_function_is_executable_by_public_and_all_pin_search_path(db):
    rows = db.sql("""
        select p.oid::regprocedure::text,
               coalesce(p.proacl::text like '%=X/%' and p.proacl::text ~ '(^|[{,])=X/', true) as public_exec,
               -- A procedure that commits cannot carry a SET clause; it calls only qualified names.
               p.prokind = 'p' or coalesce(array_to_string(p.proconfig, ',') like '%search_path=%', false)
        from pg_proc p
        where p.pronamespace in ('public'::regnamespace, 'smsao'::regnamespace)""")
    assert rows
    assert [r[0] for r in rows if r[1]] == []
    assert [r[0] for r in rows if not r[2]] == []
