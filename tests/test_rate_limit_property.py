"""Property-based tests: enhanced_security_rate_limit against a plain Python model of the
exact sliding window (CONTRACT section 3).

Time is simulated: "advance N minutes" moves every stored attempt N minutes into the past
(the clock moving forward), never a sleep. In the model an admitted attempt still counts
iff its age in whole simulated minutes is < the call's window: an attempt aged exactly
`window` minutes has left it, because real time also advanced a little since it was made.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from support import Caller
from test_rate_limit import age_hits, attempt

OPS = ("alpha", "beta")
ANON_IP = "203.0.113.9"


@dataclass
class Model:
    """The contract, literally: per (caller, operation) the simulated minute of every
    admitted attempt; a call is admitted iff fewer than max_attempts of them are younger
    than window_minutes. Refusals are counted nowhere; the first of each window is audited."""
    now: int = 0
    admitted: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    denied_at: dict[tuple[int, str], int] = field(default_factory=dict)
    audited_refusals: int = 0

    def advance(self, minutes: int) -> None:
        self.now += minutes

    def call(self, caller: int, op: str, max_attempts: int, window: int) -> bool:
        hits = self.admitted.setdefault((caller, op), [])
        ok = sum(1 for t in hits if self.now - t < window) < max_attempts
        if ok:
            hits.append(self.now)
        elif self.now - self.denied_at.get((caller, op), -10**6) >= window:
            # one audit row per key, operation and window
            self.denied_at[(caller, op)] = self.now
            self.audited_refusals += 1
        return ok


# One step of a sequence: ("advance", minutes) or ("call", caller, op).
# Callers: two users and one anon client (keyed by its x-forwarded-for address). The draws
# lean on one key and on short advances so that sequences often reach the limit and the
# window's edge; the other keys are there to prove they stay apart.
advance = st.tuples(st.just("advance"), st.one_of(st.integers(1, 2), st.integers(1, 6)))
call = st.tuples(st.just("call"), st.sampled_from([0, 0, 0, 1, 2]),
                 st.sampled_from(["alpha", "alpha", "beta"]))
# The limit and window are the operation's (as smsao.operation_limits fixes them for the
# app): drawn once per operation and example. A key keeps the attempts of its largest limit
# and longest window so far, so a later, larger one could not see attempts dropped before it
# was first used; a smaller one after a larger one stays exact
# (test_shorter_window_call_does_not_forget_older_attempts, and the ring test in
# test_rate_limit.py).
windows = st.fixed_dictionaries({op: st.integers(1, 5) for op in OPS})
limits = st.fixed_dictionaries({op: st.integers(1, 4) for op in OPS})
steps = st.lists(st.one_of(call, call, advance), min_size=8, max_size=40)


@pytest.fixture
def callers(db):
    return [Caller.user(db.create_user()), Caller.user(db.create_user()), Caller.anon(ANON_IP)]


def rate_limited_rows(db) -> int:
    return db.one("select count(*) from public.function_call_audit where outcome = 'rate_limited'")


# The db fixture is function-scoped, so every example shares one database: each example
# starts from empty limiter state (truncate: the table is hot state, not an audit table)
# and counts audit rows as a delta (function_call_audit is append-only by design).
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(windows=windows, limits=limits, steps=steps)
def test_matches_sliding_window_model(db, callers, windows, limits, steps):
    check_against_model(db, callers, windows, limits, steps)


def check_against_model(db, callers, windows, limits, steps) -> None:
    """Play the steps against the limiter and the model: ("advance", minutes), ("call", who,
    op) or ("burst", who, op, calls); every answer and the audited refusals must agree."""
    db.sql("truncate smsao.rate_limit_keys, smsao.rate_limit_hits")
    audited_before = rate_limited_rows(db)
    model = Model()
    for i, step in enumerate(steps):
        if step[0] == "advance":
            age_hits(db, step[1])
            model.advance(step[1])
            continue
        who, op, calls = step[1], step[2], step[3] if step[0] == "burst" else 1
        for n in range(calls):
            got = attempt(db, callers[who], op=op, max_attempts=limits[op], window=windows[op])
            assert got is model.call(who, op, limits[op], windows[op]), f"step {i}, call {n}: {step}"
    assert rate_limited_rows(db) - audited_before == model.audited_refusals


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_attempts=st.integers(1, 6), window=st.integers(1, 5),
       gaps=st.lists(st.integers(0, 3), min_size=1, max_size=25))
def test_never_more_than_max_admitted_in_any_window(db, callers, max_attempts, window, gaps):
    """The contract's invariant, independent of the model: one key called once per gap,
    and in no span of `window` simulated minutes more than max_attempts admitted."""
    db.sql("truncate smsao.rate_limit_keys, smsao.rate_limit_hits")
    now, admitted_at = 0, []
    for gap in gaps:
        if gap:
            age_hits(db, gap)
            now += gap
        if attempt(db, callers[0], max_attempts=max_attempts, window=window):
            admitted_at.append(now)
    for start in admitted_at:
        assert sum(1 for t in admitted_at if start <= t < start + window) <= max_attempts
    # ...and it is not stricter than needed: the first max_attempts calls are always admitted.
    assert len(admitted_at) >= min(max_attempts, len(gaps))


def test_shorter_window_call_does_not_forget_older_attempts(db, callers):
    """Attempts are kept for the longest window used on the key, not the current call's."""
    me = callers[0]
    assert attempt(db, me, max_attempts=2, window=15) is True
    age_hits(db, 10)
    assert attempt(db, me, max_attempts=2, window=5) is True   # the first is outside 5 minutes
    # Two attempts were admitted in the last 15 minutes: a limit of 2 per 15 must refuse.
    assert attempt(db, me, max_attempts=2, window=15) is False


# Large limits (101 and up): a key's newest attempts, up to 100, live in the array on its
# row and the older ones in rate_limit_hits, moved there 100 at a time. Bursts of calls
# cross those moves, the window's edge and the ring's wrap; the model stays the judge.
large_limits = st.fixed_dictionaries({op: st.integers(101, 230) for op in OPS})
burst = st.tuples(st.just("burst"), st.sampled_from([0, 0, 1]), st.sampled_from(["alpha", "alpha", "beta"]),
                  st.integers(1, 90))
large_steps = st.lists(st.one_of(burst, burst, advance), min_size=3, max_size=10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(windows=windows, limits=large_limits, steps=large_steps)
def test_large_limits_match_sliding_window_model(db, callers, windows, limits, steps):
    check_against_model(db, callers, windows, limits, steps)
