"""runner.cache in one process: expiry, single flight, invalidation, statistics."""
import threading
import time

import pytest

from runner import cache as cache_module
from runner.cache import Cache


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


def test_entries_expire_after_the_default_ttl_of_five_minutes(clock):
    c = Cache(timer=clock)
    c.set("profile:1", {"name": "Ana"})
    clock.advance(299.9)
    assert c.get("profile:1") == {"name": "Ana"}
    clock.advance(0.1)
    assert c.get("profile:1") is None
    assert "profile:1" not in c and len(c) == 0


def test_per_key_ttl_and_refetch_after_expiry(clock):
    c = Cache(timer=clock)
    calls = []

    def fetch():
        calls.append(1)
        return len(calls)

    assert c.get_or_fetch("credits:1", fetch, ttl=10) == 1
    clock.advance(9.99)
    assert c.get_or_fetch("credits:1", fetch, ttl=10) == 1
    clock.advance(0.01)
    assert c.get_or_fetch("credits:1", fetch, ttl=10) == 2
    assert len(calls) == 2


def test_none_is_a_cached_value_not_a_miss(clock):
    c = Cache(timer=clock)
    calls = []
    for _ in range(3):
        assert c.get_or_fetch("profile:x", lambda: calls.append(1)) is None
    assert len(calls) == 1
    assert c.get("absent", "dflt") == "dflt"


def test_bad_ttl_is_refused():
    with pytest.raises(ValueError):
        Cache(ttl=0)
    with pytest.raises(ValueError):
        Cache().set("k", 1, ttl=-1)


def test_statistics_count_hits_misses_and_fetches(clock):
    c = Cache(timer=clock)
    c.get("a")                            # miss
    c.set("a", 1)
    c.get("a")                            # hit
    c.get_or_fetch("b", lambda: 2)        # miss + fetch
    c.get_or_fetch("b", lambda: 3)        # hit
    s = c.stats()
    assert (s.hits, s.misses, s.fetches, s.size) == (2, 2, 1, 2)
    assert s.hit_rate == 0.5
    c.reset_stats()
    assert c.stats().hits == 0 and c.stats().size == 2


def test_lru_bound_evicts_the_least_recently_used(clock):
    c = Cache(maxsize=2, timer=clock)
    c.set("a", 1)
    c.set("b", 2)
    c.get("a")
    c.set("c", 3)
    assert "a" in c and "c" in c and "b" not in c


def test_single_flight_runs_fetch_once_for_concurrent_callers():
    c = Cache()
    started, release = threading.Event(), threading.Event()
    calls = []

    def slow_fetch():
        calls.append(threading.get_ident())
        started.set()
        release.wait(5)
        return "value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(c.get_or_fetch("k", slow_fetch)))
               for _ in range(16)]
    for t in threads:
        t.start()
    assert started.wait(5)
    # Give every other thread time to reach the flight before releasing the fetch.
    deadline = time.monotonic() + 5
    while c.stats().coalesced < 15 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(5)
    assert results == ["value"] * 16
    assert len(calls) == 1
    s = c.stats()
    assert (s.fetches, s.coalesced, s.misses) == (1, 15, 16)


def test_single_flight_is_per_key():
    c = Cache()
    barrier = threading.Barrier(2, timeout=5)

    def fetch(v):
        barrier.wait()  # both fetches must run at once, or this times out
        return v

    out = {}
    t1 = threading.Thread(target=lambda: out.__setitem__("a", c.get_or_fetch("a", lambda: fetch(1))))
    t2 = threading.Thread(target=lambda: out.__setitem__("b", c.get_or_fetch("b", lambda: fetch(2))))
    t1.start(), t2.start(), t1.join(5), t2.join(5)
    assert out == {"a": 1, "b": 2}


def test_a_failing_fetch_reaches_every_waiter_and_caches_nothing():
    c = Cache()
    started, release = threading.Event(), threading.Event()

    def failing():
        started.set()
        release.wait(5)
        raise ConnectionError("database unreachable")

    errors = []

    def call():
        try:
            c.get_or_fetch("k", failing)
        except ConnectionError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    assert started.wait(5)
    deadline = time.monotonic() + 5
    while c.stats().coalesced < 7 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in threads:
        t.join(5)
    assert errors == ["database unreachable"] * 8
    assert "k" not in c
    assert c.stats().fetch_errors == 1
    # The next call tries again and can succeed.
    assert c.get_or_fetch("k", lambda: "ok") == "ok"


def test_a_key_invalidated_during_its_fetch_is_returned_but_not_cached():
    c = Cache()

    def fetch():
        c.invalidate("profile:1")  # a NOTIFY arriving while the old row was being read
        return "maybe stale"

    assert c.get_or_fetch("profile:1", fetch) == "maybe stale"
    assert "profile:1" not in c

    def fetch2():
        c.invalidate_pattern("profile:*")
        return "maybe stale"

    c.get_or_fetch("profile:1", fetch2)
    assert "profile:1" not in c


def test_fetch_asking_for_its_own_key_fails_instead_of_deadlocking():
    c = Cache()
    with pytest.raises(RuntimeError, match="same key"):
        c.get_or_fetch("k", lambda: c.get_or_fetch("k", lambda: 1))
    assert c.get_or_fetch("k", lambda: 2) == 2


def test_invalidate_one_key():
    c = Cache()
    c.set("contacts:1", [1])
    c.set("contacts:2", [2])
    assert c.invalidate("contacts:1") is True
    assert c.invalidate("contacts:1") is False
    assert "contacts:2" in c
    assert c.stats().invalidations == 1


def test_invalidate_pattern_is_fnmatch_style():
    c = Cache()
    u1, u2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
    keys = [cache_module.sms_logs_key(u1, p) for p in range(3)] + [
        cache_module.sms_logs_key(u2, 0), cache_module.contacts_key(u1),
        cache_module.contacts_key(u2), cache_module.profile_key(u1), ("tuple", "key")]
    for k in keys:
        c.set(k, 1)
    assert c.invalidate_pattern(cache_module.sms_logs_pattern(u1)) == 3
    assert cache_module.sms_logs_key(u2, 0) in c
    assert c.invalidate_pattern("contacts:*") == 2
    assert c.invalidate_pattern("profile:?1111111-*") == 1
    assert c.invalidate_pattern("nothing:*") == 0
    assert c.invalidate_pattern(cache_module.sms_logs_key(u2, 0)) == 1  # no wildcard: exact
    assert ("tuple", "key") in c and len(c) == 1


def test_key_helpers_name_the_contract_keys():
    uid = "7d7d0bd2-0f3a-4b5c-9d0e-000000000001"
    assert cache_module.profile_key(uid) == f"profile:{uid}"
    assert cache_module.credits_key(uid) == f"credits:{uid}"
    assert cache_module.contacts_key(uid) == f"contacts:{uid}"
    assert cache_module.campaigns_key(uid) == f"campaigns:{uid}"
    assert cache_module.sms_logs_key(uid, 3) == f"sms_logs:{uid}:3"
    assert cache_module.dashboard_stats_key(uid) == f"dashboard_stats:{uid}"


def test_notification_payloads_apply_keys_and_patterns_and_unreadable_ones_clear_all():
    c = Cache()
    for k in ("contacts:1", "dashboard_stats:1", "sms_logs:1:0", "sms_logs:1:1", "profile:2"):
        c.set(k, 1)
    assert c.apply_invalidation('["contacts:1", "sms_logs:1:*"]') == 3
    assert sorted(c._data) == ["dashboard_stats:1", "profile:2"]
    assert c.apply_invalidation("{not json") == 2
    assert len(c) == 0


def test_module_level_api_uses_one_default_cache():
    key = "dashboard_stats:module-level-test"
    try:
        assert cache_module.get_or_fetch(key, lambda: 41) == 41
        assert cache_module.get(key) == 41
        cache_module.set(key, 42)
        assert cache_module.get(key) == 42
        assert cache_module.invalidate_pattern("dashboard_stats:module-*") == 1
        assert cache_module.get(key) is None
    finally:
        cache_module.invalidate(key)
