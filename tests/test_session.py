import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from support import ANON, SERVICE, Caller

VALID = "select public.validate_user_session()"


def valid(db, caller) -> bool:
    return db.as_(caller, VALID)[0][0]


def test_service_role_and_trusted_sessions_are_valid(db):
    assert valid(db, SERVICE) is True
    assert db.one(VALID) is True  # a claims-less superuser, like pg_cron


def test_anon_is_never_valid(db):
    assert valid(db, ANON) is False
    assert valid(db, Caller.anon("203.0.113.9")) is False


def test_active_user_is_valid(db):
    assert valid(db, Caller.user(db.create_user())) is True


@pytest.mark.parametrize("status", ["suspended", "pending", "deleted"])
def test_inactive_profile_is_invalid(db, status):
    assert valid(db, Caller.user(db.create_user(status=status))) is False


def test_exp_in_the_past_is_invalid_and_absent_exp_is_allowed(db):
    uid = db.create_user()
    assert valid(db, Caller.user(uid, exp=int(time.time()) - 1)) is False
    assert valid(db, Caller(role="authenticated", sub=uid)) is True


def test_session_must_be_the_users_own_and_unexpired(db):
    uid, other = db.create_user(), db.create_user()
    now = datetime.now(timezone.utc)
    own = db.create_session(uid)
    own_later = db.create_session(uid, not_after=now + timedelta(hours=1))
    expired = db.create_session(uid, not_after=now - timedelta(seconds=1))
    foreign = db.create_session(other)
    assert valid(db, Caller.user(uid, session_id=own)) is True
    assert valid(db, Caller.user(uid, session_id=own_later)) is True
    assert valid(db, Caller.user(uid, session_id=expired)) is False
    assert valid(db, Caller.user(uid, session_id=foreign)) is False
    assert valid(db, Caller.user(uid, session_id=uuid.uuid4())) is False


def test_user_without_profile_is_invalid(db):
    assert valid(db, Caller.user(uuid.uuid4())) is False


@pytest.mark.parametrize("claims", [
    {"sub": "not-a-uuid"},
    {"sub": None},
    {"exp": "tomorrow"},
    {"session_id": "nope"},
])
def test_malformed_claims_are_invalid_not_errors(db, claims):
    uid = db.create_user()
    caller = Caller(role="authenticated", sub=uid, extra_claims=claims)
    if "sub" in claims:
        caller = Caller(role="authenticated", extra_claims=claims)
    assert valid(db, caller) is False


def test_authenticated_role_without_claims_is_invalid(db):
    assert valid(db, Caller(role="authenticated")) is False
