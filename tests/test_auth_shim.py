"""Identity (CONTRACT section 1): the auth shim, who the caller is, roles, new users."""
from __future__ import annotations

import json
import uuid

import psycopg
import pytest

from support import ANON, SERVICE, Caller


def claims_of(db, caller: Caller) -> tuple:
    return db.as_(caller, "select auth.uid(), auth.role(), auth.jwt(), smsao.caller_id(), smsao.caller_role()")[0]


def test_claims_json_is_read(db):
    uid, sid = uuid.uuid4(), uuid.uuid4()
    caller = Caller.user(uid, exp=2_000_000_000, session_id=sid)
    assert claims_of(db, caller) == (uid, "authenticated", caller.claims(), uid, "authenticated")


def test_legacy_per_claim_settings_are_read(db):
    uid = uuid.uuid4()
    with db.conn.transaction():
        db.sql("select set_config('request.jwt.claim.sub', %s, true), set_config('request.jwt.claim.role', 'authenticated', true)",
               [str(uid)])
        assert db.sql("select auth.uid(), auth.role(), smsao.caller_id()") == [(uid, "authenticated", uid)]


def test_settings_read_empty_after_commit_and_mean_absent(db):
    with db.connect() as conn:
        # Never set in this session: NULL.
        assert conn.execute("select current_setting('request.jwt.claims', true), auth.uid()").fetchone() == (None, None)
        with conn.transaction():
            conn.execute("select set_config('request.jwt.claims', %s, true), set_config('request.jwt.claim.sub', %s, true)",
                         [json.dumps({"sub": str(uuid.uuid4()), "role": "authenticated"}), str(uuid.uuid4())])
            assert conn.execute("select auth.uid()").fetchone()[0] is not None
        # Set locally once, then committed: the settings now read '' (Supabase semantics).
        assert conn.execute("select current_setting('request.jwt.claims', true),"
                            " current_setting('request.jwt.claim.sub', true)").fetchone() == ("", "")
        assert conn.execute("select auth.uid(), auth.role(), auth.jwt(), smsao.caller_id(), smsao.caller_role()"
                            ).fetchone() == (None, None, None, None, "service_role")


@pytest.mark.parametrize("sub", ["not-a-uuid", "", "12345"])
def test_caller_id_is_null_for_a_subject_that_is_not_a_uuid(db, sub):
    caller = Caller(role="authenticated", extra_claims={"sub": sub})
    assert db.as_(caller, "select smsao.caller_id()") == [(None,)]


def test_caller_id_is_null_for_claims_that_are_not_json(db):
    with db.conn.transaction():
        db.sql("set local role authenticated")
        db.sql("select set_config('request.jwt.claims', 'garbage', true)")
        assert db.sql("select smsao.caller_id()") == [(None,)]


def test_caller_role_for_each_kind_of_session(db):
    uid = db.create_user()
    assert db.as_(ANON, "select smsao.caller_role()") == [("anon",)]
    assert db.as_(Caller.user(uid), "select smsao.caller_role()") == [("authenticated",)]
    assert db.as_(SERVICE, "select smsao.caller_role()") == [("service_role",)]
    # A claims-less superuser (pg_cron, a DBA in psql) is trusted like service_role ...
    assert db.one("select smsao.caller_role()") == "service_role"
    # ... but a superuser session carrying a user's claims is that user.
    with db.conn.transaction():
        db.sql("select set_config('request.jwt.claims', %s, true)", [json.dumps({"sub": str(uid)})])
        assert db.one("select smsao.caller_role()") == "authenticated"


def test_caller_role_of_other_login_roles(db):
    db.sql("create role smsao_test_owner nologin; create role smsao_test_member nologin in role smsao_test_owner;"
           " create role smsao_test_stranger nologin;"
           " grant usage on schema auth to smsao_test_owner, smsao_test_stranger;"
           " grant usage on schema smsao to smsao_test_stranger;"
           " grant execute on function smsao.caller_role() to smsao_test_owner, smsao_test_stranger")
    try:
        db.sql("alter schema smsao owner to smsao_test_owner")
        for role, expected in [("smsao_test_owner", "service_role"), ("smsao_test_member", "service_role"),
                               ("smsao_test_stranger", "anon")]:
            with db.conn.transaction(force_rollback=True):
                db.sql(f"set local role {role}")
                assert db.one("select smsao.caller_role()") == expected, role
    finally:
        db.sql("alter schema smsao owner to postgres")
        db.sql("revoke execute on function smsao.caller_role() from smsao_test_owner, smsao_test_stranger;"
               " revoke usage on schema auth from smsao_test_owner, smsao_test_stranger;"
               " revoke usage on schema smsao from smsao_test_stranger")
        db.sql("drop role smsao_test_member, smsao_test_owner, smsao_test_stranger")


def test_caller_role_inside_security_definer_is_the_requester(db):
    """A SECURITY DEFINER function owned by the superuser must not make its caller trusted."""
    db.sql("create function public.t_whoami() returns text language sql security definer"
           " set search_path = '' as $$ select smsao.caller_role() $$;"
           " grant execute on function public.t_whoami() to anon, authenticated")
    uid = db.create_user()
    assert db.as_(ANON, "select public.t_whoami()") == [("anon",)]
    assert db.as_(Caller.user(uid), "select public.t_whoami()") == [("authenticated",)]


def test_has_role(db):
    user, admin = db.create_user(), db.create_user(admin=True)
    q = "select public.has_role(%s, %s::public.app_role)"
    assert db.as_(SERVICE, q, [admin, "admin"]) == [(True,)]
    assert db.as_(SERVICE, q, [admin, "user"]) == [(True,)]
    assert db.as_(SERVICE, q, [user, "admin"]) == [(False,)]
    assert db.as_(SERVICE, q, [uuid.uuid4(), "user"]) == [(False,)]
    assert db.as_(Caller.user(user), q, [None, "admin"]) == [(False,)]
    assert db.as_(Caller.user(user), q, [admin, None]) == [(False,)]
    assert db.as_(Caller.user(user), q, [None, None]) == [(False,)]
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        db.as_(SERVICE, q, [admin, "root"])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.as_(ANON, q, [admin, "admin"])


def test_is_admin_needs_an_active_admin(db):
    admin, user = db.create_user(admin=True), db.create_user()
    suspended = db.create_user(admin=True, status="suspended")
    assert db.as_(Caller.user(admin), "select smsao.is_admin()") == [(True,)]
    assert db.as_(Caller.user(user), "select smsao.is_admin()") == [(False,)]
    assert db.as_(Caller.user(suspended), "select smsao.is_admin()") == [(False,)]
    assert db.as_(SERVICE, "select smsao.is_admin()") == [(False,)]


def test_new_auth_user_gets_an_active_profile_and_the_user_role(db):
    """Inserted the way the auth service does it: a role with rights on auth.users only."""
    db.sql("create role smsao_test_auth_admin nologin; grant usage on schema auth to smsao_test_auth_admin;"
           " grant insert on auth.users to smsao_test_auth_admin")
    uid, named = uuid.uuid4(), uuid.uuid4()
    with db.conn.transaction():
        db.sql("set local role smsao_test_auth_admin")
        db.sql("insert into auth.users (id, email) values (%s, 'new@test.ao')", [uid])
        db.sql("insert into auth.users (id, email, raw_user_meta_data) values (%s, 'n@test.ao', %s)",
               [named, json.dumps({"full_name": "Nzinga Mbande"})])
    db.sql("drop owned by smsao_test_auth_admin; drop role smsao_test_auth_admin")
    rows = db.sql("select user_id, email, full_name, phone, status, credits from public.profiles order by email desc")
    assert rows == [(uid, "new@test.ao", None, None, "active", 0), (named, "n@test.ao", "Nzinga Mbande", None, "active", 0)]
    assert sorted(db.sql("select user_id, role::text from public.user_roles")) == sorted([(uid, "user"), (named, "user")])
    assert db.one("select count(*) from public.credit_transactions") == 0
    # Deleting the auth user removes what hangs off it.
    db.sql("delete from auth.users where id = %s", [uid])
    assert db.sql("select user_id from public.profiles") == [(named,)]
    assert db.sql("select user_id from public.user_roles") == [(named,)]
