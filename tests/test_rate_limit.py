import threading

import psycopg
import pytest

from support import Caller, request

RL = "select public.enhanced_security_rate_limit(%s, %s, %s)"


def attempt(db, caller, op="op", max_attempts=3, window=15):
    return db.as_(caller, RL, [op, max_attempts, window])[0][0]


def age_hits(db, minutes):
    """Move every stored attempt `minutes` into the past: the clock moving forward."""
    db.sql("update smsao.rate_limit_windows set hits = array(select h - make_interval(mins => %s) "
           "from unnest(hits) h), window_ends = window_ends - make_interval(mins => %s)", [minutes, minutes])


def test_admits_exactly_max_then_refuses_and_audits(db):
    uid = db.create_user()
    me = Caller.user(uid)
    assert [attempt(db, me) for _ in range(5)] == [True, True, True, False, False]
    rows = db.sql("select caller_id, caller_role, function_name, outcome, arguments->>'operation_type' "
                  "from public.function_call_audit order by id")
    assert rows == [(uid, "authenticated", "enhanced_security_rate_limit", "rate_limited", "op")] * 2


def test_refusals_count_nothing(db):
    me = Caller.user(db.create_user())
    for _ in range(10):
        attempt(db, me, max_attempts=2)
    assert db.one("select cardinality(hits) from smsao.rate_limit_windows") == 2


def test_keys_kept_apart(db):
    a, b = Caller.user(db.create_user()), Caller.user(db.create_user())
    assert attempt(db, a, max_attempts=1) is True
    assert attempt(db, a, max_attempts=1) is False
    assert attempt(db, b, max_attempts=1) is True            # another user
    assert attempt(db, a, op="other", max_attempts=1) is True  # another operation


def test_anon_keyed_by_first_forwarded_address(db):
    first = Caller(role="anon", headers={"x-forwarded-for": "203.0.113.7, 10.0.0.1"})
    same_client = Caller(role="anon", headers={"x-forwarded-for": "203.0.113.7"})
    other_client = Caller(role="anon", headers={"x-forwarded-for": "198.51.100.2, 10.0.0.1"})
    assert attempt(db, first, max_attempts=1) is True
    assert attempt(db, same_client, max_attempts=1) is False
    assert attempt(db, other_client, max_attempts=1) is True
    assert db.one("select arguments->>'caller_key' from public.function_call_audit") == "ip:203.0.113.7"


def test_window_slides(db):
    me = Caller.user(db.create_user())
    assert [attempt(db, me, window=10) for _ in range(3)] == [True] * 3
    age_hits(db, 9)
    assert attempt(db, me, window=10) is False     # all three still inside the window
    age_hits(db, 1)
    assert attempt(db, me, window=10) is True      # the first three left it
    assert db.one("select cardinality(hits) from smsao.rate_limit_windows") == 1


@pytest.mark.parametrize("args, argument", [
    ([None, 5, 15], "operation_type"), (["", 5, 15], "operation_type"),
    (["Bad Op;", 5, 15], "operation_type"), (["op", None, 15], "max_attempts"),
    (["op", 0, 15], "max_attempts"), (["op", -1, 15], "max_attempts"),
    (["op", 2_000_000_000, 15], "max_attempts"), (["op", 5, None], "window_minutes"),
    (["op", 5, 0], "window_minutes"), (["op", 5, -15], "window_minutes"),
    (["op", 5, 10_000_000], "window_minutes"),
])
def test_bad_input_raises_22023_naming_the_argument(db, args, argument):
    me = Caller.user(db.create_user())
    with pytest.raises(psycopg.Error) as exc:
        db.as_(me, RL, args)
    assert exc.value.sqlstate == "22023"
    assert argument in str(exc.value)
    assert db.one("select count(*) from smsao.rate_limit_windows") == 0


def test_wrong_type_is_refused(db):
    with pytest.raises(psycopg.Error) as exc:
        db.as_(Caller.user(db.create_user()), "select public.enhanced_security_rate_limit('op', 'many', 15)")
    assert exc.value.sqlstate == "22P02"


def test_exact_under_concurrency(db):
    """16 sessions hammering one key with max_attempts = 17 admit exactly 17."""
    me = Caller.user(db.create_user())
    sessions, per_session = 16, 8
    start = threading.Barrier(sessions)
    admitted = []

    def hammer():
        with db.connect() as conn:
            start.wait()
            for _ in range(per_session):
                admitted.append(request(conn, me, RL, ["hot", 17, 15])[0][0])

    threads = [threading.Thread(target=hammer) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == sessions * per_session
    assert admitted.count(True) == 17
    assert db.one("select count(*) from public.function_call_audit where outcome = 'rate_limited'") == \
        sessions * per_session - 17


def test_state_is_pruned_once_past_its_window(db):
    old, fresh = Caller.user(db.create_user()), Caller.user(db.create_user())
    attempt(db, old, window=5)
    age_hits(db, 6)
    attempt(db, fresh, window=5)
    assert db.one("select smsao.prune_rate_limit_state()") == 1
    assert db.one("select count(*) from smsao.rate_limit_windows") == 1


def test_state_is_not_readable_by_app_roles(db):
    for caller in (Caller.user(db.create_user()), Caller.service(), Caller.anon("203.0.113.1")):
        with pytest.raises(psycopg.Error) as exc:
            db.as_(caller, "select * from smsao.rate_limit_windows")
        assert exc.value.sqlstate == "42501"
