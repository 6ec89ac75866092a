"""Privilege escalation, the credit ledger invariant and append-only audit trails."""
from __future__ import annotations

import threading

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from support import SERVICE, Caller, begin_request, request

DENIED = psycopg.errors.InsufficientPrivilege  # SQLSTATE 42501


def profile(db, uid) -> tuple:
    return db.sql("select full_name, email, phone, status, credits, updated_at from public.profiles"
                  " where user_id = %s", [uid])[0]


def ledger_balanced(db) -> list[tuple]:
    """Users whose balance differs from the sum of their ledger (should be none)."""
    return db.sql("select p.user_id, p.credits, coalesce(sum(t.amount), 0) from public.profiles p"
                  " left join public.credit_transactions t using (user_id)"
                  " group by p.user_id, p.credits having p.credits <> coalesce(sum(t.amount), 0)")


def refusal(db, caller, query, params=None) -> str | None:
    """None when `caller` is refused with 42501; otherwise what happened instead."""
    try:
        db.as_(caller, query, params)
    except DENIED:
        return None
    except psycopg.Error as exc:
        return f"SQLSTATE {exc.sqlstate}: {exc}".splitlines()[0]
    return "allowed"


# -- what a user cannot do to their own account -------------------------------------
# (Loops rather than parametrize: one cloned database per test keeps the suite fast.)

PROTECTED_ASSIGNMENTS = [
    "credits = credits + 1000", "status = 'active'", "email = 'me@evil.ao'",
    "user_id = gen_random_uuid()", "created_at = now() - interval '1 year'", "updated_at = now()",
    "full_name = 'ok', credits = 5",  # one forbidden column spoils the statement
]


def test_user_cannot_set_protected_profile_columns(db):
    users = {"user": db.create_user(status="pending", credits=3), "admin": db.create_user(admin=True, credits=3)}
    failures = []
    for kind, me in users.items():
        before = profile(db, me)
        for assignment in PROTECTED_ASSIGNMENTS:
            problem = refusal(db, Caller.user(me), f"update public.profiles set {assignment} where user_id = %s", [me])
            if problem or profile(db, me) != before:
                failures.append(f"{kind}: set {assignment}: {problem or 'the row changed'}")
    assert not failures, "\n".join(failures)


def test_user_edits_own_name_and_phone_only_through_checks(db):
    me = db.create_user()
    db.as_(Caller.user(me), "update public.profiles set full_name = 'Njinga', phone = '+244923000001'")
    assert profile(db, me)[0] == "Njinga" and profile(db, me)[2] == "+244923000001"
    with pytest.raises(psycopg.errors.CheckViolation):
        db.as_(Caller.user(me), "update public.profiles set phone = '923000001'")


def test_user_cannot_change_other_profiles(db):
    me, victim = db.create_user(), db.create_user()
    before = profile(db, victim)
    assert request(db.conn, Caller.user(me), "update public.profiles set full_name = 'pwned'"
                   " where user_id = %s returning user_id", [victim]) == []
    assert profile(db, victim) == before


# Everything a user could try to give themselves money, rights, or others' rows.
STATE = ("select (select jsonb_agg(to_jsonb(t) order by t.id) from public.user_roles t),"
         " (select jsonb_agg(to_jsonb(t) order by t.id) from public.credit_transactions t),"
         " (select jsonb_agg(to_jsonb(t) order by t.id) from public.credit_requests t),"
         " (select jsonb_agg(to_jsonb(t) order by t.id) from public.contacts t),"
         " (select jsonb_agg(to_jsonb(t) order by t.id) from public.campaigns t),"
         " (select jsonb_agg(to_jsonb(t) order by t.user_id) from public.profiles t),"
         " (select count(*) from public.contact_import_jobs), (select count(*) from public.sms_configurations),"
         " (select count(*) from public.admin_audit_logs)")


REFUSED_STATEMENTS = [
    "insert into public.user_roles (user_id, role) values ({me}, 'admin')",
    "update public.user_roles set role = 'admin' where user_id = {me}",
    "delete from public.user_roles where user_id = {me}",
    "insert into public.credit_transactions (user_id, amount, kind) values ({me}, 1000, 'refund')",
    "update public.credit_transactions set amount = 1000 where user_id = {me}",
    "delete from public.credit_transactions where user_id = {me} and amount < 0",
    "insert into public.credit_requests (user_id, amount) values ({me}, 10)",
    "update public.credit_requests set status = 'approved', processed_at = now() where user_id = {me}",
    "insert into public.profiles (user_id) values (gen_random_uuid())",
    "delete from public.profiles where user_id = {me}",
    "truncate public.contacts",
    "insert into public.contact_import_jobs (user_id, status, completed_at) values ({me}, 'completed', now())",
    "insert into public.contact_import_jobs (user_id, processed_rows) values ({me}, 5)",
    "insert into public.contacts (user_id, phone) values ({other}, '+244923000009')",
    "update public.contacts set user_id = {other} where user_id = {me}",
    "insert into public.campaigns (user_id, name) values ({other}, 'spam')",
    "update public.campaigns set user_id = {other} where user_id = {me}",
    "insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('evil', 'X', true)",
    "insert into public.admin_audit_logs (action) values ('forged')",
    "update public.system_alerts set message = 'hidden'",
    "select * from public.otp_codes",
]


def test_user_statements_refused(db):
    me, other = db.create_user(credits=5), db.create_user()
    db.sql("insert into public.contacts (user_id, phone) values (%s, '+244923000001')", [me])
    db.sql("insert into public.campaigns (user_id, name) values (%s, 'mine')", [me])
    db.sql("insert into public.credit_requests (user_id, amount) values (%s, 10)", [me])
    db.sql("insert into public.credit_transactions (user_id, amount) values (%s, -2)", [me])
    before = db.sql(STATE)
    failures = []
    for statement in REFUSED_STATEMENTS:
        problem = refusal(db, Caller.user(me), statement.format(me=f"'{me}'::uuid", other=f"'{other}'::uuid"))
        if problem or db.sql(STATE) != before:
            failures.append(f"{statement}: {problem or 'the data changed'}")
    assert not failures, "\n".join(failures)
    assert db.one("select credits from public.profiles where user_id = %s", [me]) == 3
    assert ledger_balanced(db) == []


# -- the ledger: profiles.credits == sum(credit_transactions.amount), always --------

def test_ledger_rows_move_the_balance(db):
    uid = db.create_user()
    for amount in (10, -3, 25):
        db.as_(SERVICE, "insert into public.credit_transactions (user_id, amount, kind) values (%s, %s, 'refund')",
               [uid, amount])
    assert db.one("select credits from public.profiles where user_id = %s", [uid]) == 32
    assert db.one("select count(*) from public.credit_transactions where user_id = %s", [uid]) == 3
    assert ledger_balanced(db) == []


def test_direct_balance_changes_are_recorded_as_adjustments(db):
    for writer in ("service_role", "superuser"):
        db.sql("delete from auth.users")
        a, b = db.create_user(credits=10), db.create_user()

        def run(query, params=None):
            return db.as_(SERVICE, query, params) if writer == "service_role" else db.sql(query, params)

        run("update public.profiles set credits = 50 where user_id = %s", [a])
        run("update public.profiles set credits = credits + 7")  # several rows, one statement
        run("update public.profiles set credits = credits, full_name = 'same balance'")  # no change: no row
        ledger = "select amount, kind from public.credit_transactions where user_id = %s order by id"
        assert db.sql(ledger, [a]) == [(10, "adjustment"), (40, "adjustment"), (7, "adjustment")], writer
        assert db.sql(ledger, [b]) == [(7, "adjustment")], writer
        assert db.one("select credits from public.profiles where user_id = %s", [a]) == 57
        assert ledger_balanced(db) == []


def test_a_trusted_loader_may_insert_a_profile_with_a_balance(db):
    """CONTRACT section 2: the listed columns alone; the ledger gets the opening balance."""
    import uuid
    uid = uuid.uuid4()
    db.sql("alter table auth.users disable trigger smsao_on_auth_user_created")
    db.sql("insert into auth.users (id, email) values (%s, 'l@test.ao')", [uid])
    db.sql("alter table auth.users enable trigger smsao_on_auth_user_created")
    db.as_(SERVICE, "insert into public.profiles (user_id, email, credits) values (%s, 'l@test.ao', 40)", [uid])
    assert db.sql("select amount, kind from public.credit_transactions where user_id = %s", [uid]) == [(40, "adjustment")]
    assert ledger_balanced(db) == []


def test_credits_cannot_go_negative(db):
    uid = db.create_user(credits=5)
    for statement in ("insert into public.credit_transactions (user_id, amount) values (%s, -6)",
                      "update public.profiles set credits = -1 where user_id = %s",
                      "update public.profiles set credits = credits - 6 where user_id = %s"):
        with pytest.raises(psycopg.errors.CheckViolation):  # SQLSTATE 23514
            db.as_(SERVICE, statement, [uid])
        assert db.one("select credits from public.profiles where user_id = %s", [uid]) == 5
        assert db.one("select count(*) from public.credit_transactions where user_id = %s", [uid]) == 1
    # Spending exactly the balance is fine.
    db.as_(SERVICE, "insert into public.credit_transactions (user_id, amount, kind) values (%s, -5, 'sms_charge')", [uid])
    assert db.one("select credits from public.profiles where user_id = %s", [uid]) == 0
    assert ledger_balanced(db) == []


def test_the_internal_writer_marker_cannot_be_forged(db):
    """A session that sets smsao.credit_writer itself must not unbalance the ledger."""
    uid = db.create_user(credits=5)
    for marker in ("profile", "ledger"):
        with db.conn.transaction():
            begin_request(db.conn, SERVICE)
            for statement in ("insert into public.credit_transactions (user_id, amount) values (%s, 10)",
                              "update public.profiles set credits = credits + 1 where user_id = %s"):
                db.sql("select set_config('smsao.credit_writer', %s, true)", [marker])
                db.sql(statement, [uid])
        assert ledger_balanced(db) == [], marker
    assert db.one("select credits from public.profiles where user_id = %s", [uid]) == 27


def test_concurrent_ledger_and_direct_writes_stay_balanced(db):
    """Row locks on the profile serialise the writers; each sees the other's committed balance."""
    uid = db.create_user(credits=1)
    first, second = db.connect(), db.connect()
    try:
        with first.transaction():
            begin_request(first, SERVICE)
            first.execute("insert into public.credit_transactions (user_id, amount) values (%s, 5)", [uid])
            errors: list = []

            def direct_set():
                try:
                    request(second, SERVICE, "update public.profiles set credits = 50 where user_id = %s", [uid])
                except Exception as exc:  # reported below
                    errors.append(exc)

            t = threading.Thread(target=direct_set)
            t.start()
            t.join(0.5)
            assert t.is_alive(), "the direct update should wait for the ledger writer's row lock"
        t.join(10)
        assert not errors
    finally:
        first.close()
        second.close()
    # The direct write saw the committed 6, so its adjustment is 44, not 49.
    assert db.sql("select amount from public.credit_transactions where user_id = %s order by id", [uid]) \
        == [(1,), (5,), (44,)]
    assert db.one("select credits from public.profiles where user_id = %s", [uid]) == 50
    assert ledger_balanced(db) == []


OPERATIONS = st.lists(st.one_of(
    st.tuples(st.just("ledger"), st.integers(-30, 30).filter(bool)),
    st.tuples(st.just("set"), st.integers(-5, 60)),
    st.tuples(st.just("add"), st.integers(-30, 30)),
), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPERATIONS)
def test_balance_equals_ledger_for_any_sequence_of_writes(db, ops):
    uid = db.one("select user_id from public.profiles limit 1") or db.create_user()
    with db.conn.transaction(force_rollback=True):
        expected = db.one("select credits from public.profiles where user_id = %s", [uid])
        for kind, n in ops:
            query = {"ledger": "insert into public.credit_transactions (user_id, amount) values (%(u)s, %(n)s)",
                     "set": "update public.profiles set credits = %(n)s where user_id = %(u)s",
                     "add": "update public.profiles set credits = credits + %(n)s where user_id = %(u)s"}[kind]
            target = n if kind == "set" else expected + n
            try:
                with db.conn.transaction():
                    begin_request(db.conn, SERVICE)
                    db.conn.execute(query, {"u": uid, "n": n})
                    db.conn.execute("reset role")
                assert target >= 0
                expected = target
            except psycopg.errors.CheckViolation:
                assert target < 0
            assert db.one("select credits from public.profiles where user_id = %s", [uid]) == expected
            assert ledger_balanced(db) == []


# -- audit trails are append-only --------------------------------------------------

AUDIT_TABLES = {
    "admin_audit_logs": "insert into public.admin_audit_logs (action) values ('x')",
    "pii_access_audit": "insert into public.pii_access_audit (table_name) values ('profiles')",
    "function_call_audit": "insert into public.function_call_audit (function_name, outcome) values ('f', 'ok')",
}
CHANGES = ["update public.{t} set created_at = now() - interval '3 years'", "delete from public.{t}", "truncate public.{t}"]


def test_audit_tables_are_append_only(db):
    for table in AUDIT_TABLES:
        check_append_only(db, table)


def check_append_only(db, table):
    db.as_(SERVICE, AUDIT_TABLES[table])  # the backend appends
    admin = db.create_user(admin=True)
    rows = db.sql(f"select * from public.{table}")
    assert len(rows) == 1
    for change in CHANGES:
        query = change.format(t=table)
        for who in (SERVICE, Caller.user(admin)):
            with pytest.raises(DENIED):
                db.as_(who, query)
        # The owner (a superuser here) is stopped by the trigger, with or without a WHERE.
        with pytest.raises(DENIED, match="append-only"):
            db.sql(query)
        # The retention switch opens DELETE only.
        if not change.startswith("delete"):
            with pytest.raises(DENIED, match="append-only"):
                with db.conn.transaction():
                    db.sql("select set_config('smsao.audit_retention', 'on', true)")
                    db.sql(query)
    assert db.sql(f"select * from public.{table}") == rows
    # Even with the switch on, the backend holds no DELETE privilege.
    with pytest.raises(DENIED):
        with db.conn.transaction():
            begin_request(db.conn, SERVICE)
            db.sql("select set_config('smsao.audit_retention', 'on', true)")
            db.sql(f"delete from public.{table}")
    assert db.sql(f"select * from public.{table}") == rows


def test_retention_delete_by_the_owner(db):
    for table in AUDIT_TABLES:
        db.as_(SERVICE, AUDIT_TABLES[table])
        db.as_(SERVICE, AUDIT_TABLES[table])
        with db.conn.transaction():
            db.sql("select set_config('smsao.audit_retention', 'on', true)")
            db.sql(f"delete from public.{table} where id = (select min(id) from public.{table})")
        assert db.one(f"select count(*) from public.{table}") == 1, table
        # The switch was transaction-local: closed again.
        with pytest.raises(DENIED):
            db.sql(f"delete from public.{table}")


def test_retention_through_a_security_definer_function(db):
    """How the cleanup works: a function owned by the table owner, called by the backend."""
    db.sql("""
        create function smsao.t_purge_audit() returns bigint language plpgsql security definer
        set search_path = '' as $$
        declare n bigint;
        begin
          perform pg_catalog.set_config('smsao.audit_retention', 'on', true);
          delete from public.function_call_audit where created_at < now() - interval '2 years';
          get diagnostics n = row_count;
          return n;
        end $$;
        grant execute on function smsao.t_purge_audit() to service_role""")
    db.as_(SERVICE, "insert into public.function_call_audit (function_name, outcome, created_at)"
                    " values ('old', 'ok', now() - interval '3 years'), ('new', 'ok', now())")
    assert db.as_(SERVICE, "select smsao.t_purge_audit()") == [(1,)]
    assert db.sql("select function_name from public.function_call_audit") == [("new",)]
