import threading
import time

import psycopg
import pytest

from support import SERVICE, Caller, begin_request, request

RL = "select public.enhanced_security_rate_limit(%s, %s, %s)"


def attempt(db, caller, op="op", max_attempts=3, window=15):
    return db.as_(caller, RL, [op, max_attempts, window])[0][0]


def age_hits(db, minutes):
    """Move every stored attempt `minutes` into the past: the clock moving forward."""
    db.sql("update smsao.rate_limit_hits set at = at - make_interval(mins => %s)", [minutes])
    db.sql("update smsao.rate_limit_keys set window_ends = window_ends - make_interval(mins => %s), "
           "denied_at = denied_at - make_interval(mins => %s)", [minutes, minutes])


def kept_attempts(db) -> int:
    return db.one("select count(*) from smsao.rate_limit_hits")


def test_admits_exactly_max_then_refuses_and_audits_once_per_window(db):
    uid = db.create_user()
    me = Caller.user(uid)
    assert [attempt(db, me) for _ in range(5)] == [True, True, True, False, False]
    rows = db.sql("select caller_id, caller_role, function_name, outcome, arguments->>'operation_type' "
                  "from public.function_call_audit order by id")
    # A flood of refusals writes one row per key, operation and window, not one per call.
    assert rows == [(uid, "authenticated", "enhanced_security_rate_limit", "rate_limited", "op")]
    age_hits(db, 14)
    assert attempt(db, me) is False                 # same window: no new row
    assert db.one("select count(*) from public.function_call_audit") == 1
    age_hits(db, 1)
    assert attempt(db, me) is True                  # the first attempts left the window
    assert [attempt(db, me) for _ in range(3)] == [True, True, False]
    assert db.one("select count(*) from public.function_call_audit") == 2


def test_refusals_count_nothing(db):
    me = Caller.user(db.create_user())
    for _ in range(10):
        attempt(db, me, max_attempts=2)
    assert kept_attempts(db) == 2


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
    assert kept_attempts(db) == 3                  # the ring of the key's limit: its 3 newest


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
    assert db.one("select count(*) from smsao.rate_limit_keys") == 0


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
    assert db.one("select count(*) from public.function_call_audit where outcome = 'rate_limited'") == 1


def test_state_is_pruned_once_past_its_window(db):
    old, fresh = Caller.user(db.create_user()), Caller.user(db.create_user())
    attempt(db, old, window=5)
    age_hits(db, 6)
    attempt(db, fresh, window=5)
    assert db.one("select smsao.prune_rate_limit_state()") == 1
    assert db.one("select count(*) from smsao.rate_limit_keys") == 1
    assert kept_attempts(db) == 1                  # the pruned key's attempts went with it


def test_state_is_not_readable_by_app_roles(db):
    for caller in (Caller.user(db.create_user()), Caller.service(), Caller.anon("203.0.113.1")):
        with pytest.raises(psycopg.Error) as exc:
            db.as_(caller, "select * from smsao.rate_limit_keys join smsao.rate_limit_hits using (caller_key)")
        assert exc.value.sqlstate == "42501"


def test_admission_is_stamped_when_admitted_not_when_the_call_started(db):
    """Calls that queue behind a holder of the key's lock record the time they got through:
    stamped at their start, a queued call would record a hit seconds in the past, and in
    real time more than max_attempts could be admitted within one window."""
    me = Caller.user(db.create_user())
    holder = db.connect()
    holder.execute("begin")
    begin_request(holder, me)
    assert holder.execute(RL, ["lk", 2, 1]).fetchone()[0] is True
    results, started = [], threading.Barrier(4)

    def queued():
        with db.connect() as conn:
            started.wait()
            results.append(request(conn, me, RL, ["lk", 2, 1])[0][0])

    threads = [threading.Thread(target=queued) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait()
    waiting = 0
    for _ in range(100):
        waiting = db.one("select count(*) from pg_locks where locktype = 'advisory' and not granted")
        if waiting == 3:
            break
        time.sleep(0.05)
    assert waiting == 3, "the calls never queued on the key's lock"
    time.sleep(1.0)
    released_at = db.one("select clock_timestamp()")
    holder.execute("commit")
    holder.close()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, True]
    stamps = [r[0] for r in db.sql("select at from smsao.rate_limit_hits order by seq")]
    assert len(stamps) == 2 and stamps[1] >= released_at


def test_anonymous_callers_get_bounded_windows_and_limits(db):
    anon = Caller.anon("198.51.100.77")
    for args in (["op", 5, 61], ["op", 101, 15], ["op", 5, 10080]):
        with pytest.raises(psycopg.Error) as exc:
            db.as_(anon, RL, args)
        assert exc.value.sqlstate == "22023" and "anonymous" in str(exc.value)
    assert db.as_(anon, RL, ["op", 100, 60])[0][0] is True
    assert db.one("select count(*) from smsao.rate_limit_keys") == 1


def test_a_key_keeps_at_most_its_largest_limit_of_attempts(db):
    """The state of a key is a ring of its newest attempts, as many as its largest limit:
    a call's work and a key's size do not grow with the attempts ever made."""
    me = Caller.user(db.create_user())
    for _ in range(4):
        for _ in range(3):
            assert attempt(db, me, op="ring", max_attempts=3, window=1) is True
        assert attempt(db, me, op="ring", max_attempts=3, window=1) is False
        age_hits(db, 1)
    assert kept_attempts(db) == 3
    assert db.one("select admitted from smsao.rate_limit_keys") == 12
    # A larger limit grows the ring; the attempts kept stay countable.
    assert [attempt(db, me, op="ring", max_attempts=5, window=1) for _ in range(6)] == [True] * 5 + [False]
    assert kept_attempts(db) == 5
    assert attempt(db, me, op="ring", max_attempts=3, window=1) is False   # a smaller limit stays exact


def test_a_flood_of_new_anonymous_keys_is_pruned_whole_every_minute(db):
    """anon callers are keyed by a header they choose, so they can mint a key per call. The
    per-minute job prunes every key past its window, in batches, however many: the state
    stays bounded by the keys used within their windows (for anon at most an hour)."""
    flood = 25_000  # beyond one batch of 10,000
    for first in range(0, flood, 2500):  # a transaction holds each key's lock: 2,500 at a time
        with db.conn.transaction():
            db.sql("set local role anon")
            db.sql("select count(*) from generate_series(%s::int, %s::int) i, lateral ("
                   "  select set_config('request.headers', json_build_object('x-forwarded-for', "
                   "                    '10.' || (i / 65536) || '.' || (i / 256 %% 256) || '.' || (i %% 256))::text, true),"
                   "         public.enhanced_security_rate_limit('flood', 5, 1)) x", [first, first + 2499])
    assert db.one("select count(*) from smsao.rate_limit_keys where caller_key like 'ip:%'") == flood
    live = Caller.user(db.create_user())
    attempt(db, live, window=5)
    db.sql("update smsao.rate_limit_keys set window_ends = now() - interval '1 second' where caller_key like 'ip:%'")
    sample = db.as_(SERVICE, "select public.record_performance_sample()")[0][0]
    assert sample["details"]["rate_limit_keys_pruned"] == flood
    assert db.one("select count(*) from smsao.rate_limit_keys") == 1        # the live key stays
    assert db.one("select count(*) from smsao.rate_limit_hits where caller_key like 'ip:%'") == 0
