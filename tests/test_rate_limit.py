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
    # Every stamp, in the chunks of large rings, in the arrays on the key rows and in the
    # copies of chunks kept there, in place.
    for table, column in (("rate_limit_hits", "stamps"), ("rate_limit_keys", "ring"), ("rate_limit_keys", "due")):
        db.sql(f"update smsao.{table} set {column} = array(select r - make_interval(mins => %s) "
               f"from unnest({column}) with ordinality as u(r, i) order by i)", [minutes])
    db.sql("update smsao.rate_limit_keys set window_ends = window_ends - make_interval(mins => %s), "
           "denied_at = denied_at - make_interval(mins => %s)", [minutes, minutes])


def kept_attempts(db) -> int:
    """Attempts kept, on the key rows and in the chunks of smsao.rate_limit_hits (without the
    '-infinity' that stands for an attempt a ring had dropped when it grew)."""
    return db.one("select (select count(*) from smsao.rate_limit_hits h, unnest(h.stamps) r where r > '-infinity')"
                  " + (select count(*) from smsao.rate_limit_keys k, unnest(k.ring) r where r > '-infinity')")


def hammer_one_key(db, caller, args, sessions, per_session) -> list[bool]:
    """Every session calls the limiter per_session times with args, all starting together;
    the answers in the order they came."""
    start = threading.Barrier(sessions)
    admitted = []

    def hammer():
        with db.connect() as conn:
            start.wait()
            for _ in range(per_session):
                admitted.append(request(conn, caller, RL, args)[0][0])

    threads = [threading.Thread(target=hammer) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return admitted


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
    admitted = hammer_one_key(db, me, ["hot", 17, 15], sessions=16, per_session=8)
    assert len(admitted) == 16 * 8
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
        # Queued on the key row's lock: the holder's transaction id (or the row's tuple lock).
        waiting = db.one("select count(distinct pid) from pg_locks where not granted "
                         "and locktype in ('transactionid', 'tuple')")
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
    stamps = db.one("select ring from smsao.rate_limit_keys")   # a limit of 2: the ring is on the row
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


def test_an_admission_is_one_write_of_the_key_row_with_no_advisory_lock(db):
    """Limits up to 100 keep the ring on the key row: an admission updates that row and
    nothing else, and takes no advisory lock (the row lock serialises)."""
    me = Caller.user(db.create_user())
    attempt(db, me, max_attempts=60, window=1)
    with db.connect() as conn:
        conn.execute("begin")
        begin_request(conn, me)
        assert conn.execute(RL, ["op", 60, 1]).fetchone()[0] is True
        locks = conn.execute("select locktype, mode from pg_locks where pid = pg_backend_pid() "
                             "and locktype in ('advisory', 'tuple')").fetchall()
        written = conn.execute("select n_tup_upd, n_tup_ins from pg_stat_xact_user_tables "
                               "where schemaname = 'smsao' and relname like 'rate_limit%' "
                               "order by relname").fetchall()
        conn.execute("rollback")
    assert locks == []
    assert written == [(0, 0), (1, 0)]             # hits untouched; rate_limit_keys: one update
    assert kept_attempts(db) == 1 and db.one("select count(*) from smsao.rate_limit_hits") == 0


def test_large_limit_exact_under_concurrency(db):
    """A limit above 100 keeps its newest attempts, up to 100, in the array on the key row and
    the older ones in rate_limit_hits, in chunks of 100; 12 sessions on one key with
    max_attempts = 250 admit exactly 250, across two moves of a full array, and the ring
    keeps exactly those."""
    me = Caller.user(db.create_user())
    admitted = hammer_one_key(db, me, ["big", 250, 15], sessions=12, per_session=25)
    assert admitted.count(True) == 250 and len(admitted) == 12 * 25
    assert db.sql("select admitted, ring_size, cardinality(ring) from smsao.rate_limit_keys")[0] == (250, 250, 50)
    assert db.sql("select count(*), min(chunk), max(chunk) from smsao.rate_limit_hits")[0] == (2, 0, 1)
    assert kept_attempts(db) == 250
    age_hits(db, 15)
    assert attempt(db, me, op="big", max_attempts=250) is True      # the window slid for the large ring


def test_ring_moves_from_the_key_row_to_the_hits_table_and_stays_exact(db):
    """A key used with a small limit and then a large one: its ring moves off the key row
    with every attempt kept; the small limit stays exact afterwards, and so does the large."""
    me = Caller.user(db.create_user())
    assert [attempt(db, me, op="mix", max_attempts=3, window=5) for _ in range(4)] == [True] * 3 + [False]
    assert db.one("select ring is not null from smsao.rate_limit_keys") is True
    # The large limit sees the 3 attempts already made: 117 more, then full.
    got = [attempt(db, me, op="mix", max_attempts=120, window=5) for _ in range(118)]
    assert got == [True] * 117 + [False]
    # Attempts 1-3 stayed in the array when the ring grew; 1-100 went to the hits table as
    # chunk 0 when it filled; 101-120 are in the array.
    assert db.sql("select ring_size, admitted, cardinality(ring) from smsao.rate_limit_keys")[0] == (120, 120, 20)
    assert db.sql("select chunk, cardinality(stamps) from smsao.rate_limit_hits") == [(0, 100)]
    assert kept_attempts(db) == 120
    assert attempt(db, me, op="mix", max_attempts=3, window=5) is False   # the small limit, from the array
    age_hits(db, 5)
    assert [attempt(db, me, op="mix", max_attempts=3, window=5) for _ in range(4)] == [True] * 3 + [False]


def test_ring_on_the_row_grows_keeping_its_attempts_in_place(db):
    """Growing a ring kept on the key row: after wrapping (attempt numbers past the ring's
    size), the larger ring still counts the attempts of the smaller one."""
    me = Caller.user(db.create_user())
    for minutes in (2, 2, 1):                           # 3 rounds of 4: the 4-slot ring wraps
        assert [attempt(db, me, op="g", max_attempts=4, window=2) for _ in range(5)] == [True] * 4 + [False]
        age_hits(db, minutes)
    # Now: 12 attempts, the newest 4 are 1 minute old (inside the window), the others older.
    assert [attempt(db, me, op="g", max_attempts=7, window=2) for _ in range(4)] == [True] * 3 + [False]
    assert db.sql("select ring_size, admitted, cardinality(ring) from smsao.rate_limit_keys")[0] == (7, 15, 7)


def admission_writes(db, caller, op, max_attempts, window) -> list[tuple]:
    """One admitted call's row writes in the limiter's tables, (table, updates, inserts)."""
    with db.connect() as conn:
        conn.execute("begin")
        begin_request(conn, caller)
        assert conn.execute(RL, [op, max_attempts, window]).fetchone()[0] is True
        written = conn.execute("select relname, n_tup_upd, n_tup_ins from pg_stat_xact_user_tables "
                               "where schemaname = 'smsao' and relname like 'rate_limit%' "
                               "order by relname").fetchall()
        conn.execute("commit")
    return written


def test_a_large_ring_is_written_once_per_admission_and_stays_exact_after_wrapping(db):
    """A large limit's admission writes the key row alone; the one that finds the array on the
    row full (100 attempts) first moves them to the hits table as one chunk row, and the one
    whose deciding attempt enters the next chunk first copies that chunk onto the row. The ring
    of 101 spans 3 chunk slots: four moves later the fourth chunk has taken the first one's
    slot, and the ring still refuses the attempt past the limit."""
    me = Caller.user(db.create_user())
    size = 101
    assert [attempt(db, me, op="wrap", max_attempts=size, window=5) for _ in range(size - 1)] == [True] * (size - 1)
    assert db.one("select count(*) from smsao.rate_limit_hits") == 0
    assert admission_writes(db, me, "wrap", size, 5) == [("rate_limit_hits", 0, 1), ("rate_limit_keys", 2, 0)]
    assert attempt(db, me, op="wrap", max_attempts=size, window=5) is False
    for lap in range(3):
        age_hits(db, 5)
        first = admission_writes(db, me, "wrap", size, 5)
        if lap == 0:
            # Its deciding attempt (1) is in chunk 0, not yet copied onto the row: the copy
            # first, then the admission (one call in 100 pays this).
            assert first == [("rate_limit_hits", 0, 0), ("rate_limit_keys", 2, 0)]
        assert admission_writes(db, me, "wrap", size, 5) == [("rate_limit_hits", 0, 0), ("rate_limit_keys", 1, 0)]
        assert [attempt(db, me, op="wrap", max_attempts=size, window=5) for _ in range(size - 1)] \
            == [True] * (size - 2) + [False]
    # Attempts 1-400 went in four chunks (slot chunk % 3: the last three kept), 401-404 are in
    # the array.
    assert db.sql("select slot, chunk from smsao.rate_limit_hits order by chunk") == [(1, 1), (2, 2), (0, 3)]
    assert db.sql("select admitted, cardinality(ring) from smsao.rate_limit_keys") == [(4 * size, 4)]


def test_a_large_ring_grows_keeping_its_chunks(db):
    """A large ring grown to a larger limit: its chunks move to the new ring's slots and the
    attempts still inside the window keep counting."""
    me = Caller.user(db.create_user())
    assert [attempt(db, me, op="grow", max_attempts=150) for _ in range(151)] == [True] * 150 + [False]
    age_hits(db, 16)                                              # those 150 leave the window
    assert all(attempt(db, me, op="grow", max_attempts=150) for _ in range(80))
    assert db.sql("select chunk from smsao.rate_limit_hits order by chunk") == [(0,), (1,)]
    # 80 attempts in the window: a limit of 350 admits 270 more.
    assert [attempt(db, me, op="grow", max_attempts=350) for _ in range(271)] == [True] * 270 + [False]
    # Attempts 1-400 in four chunks (slot chunk % 5 now), 401-500 in the array, full until
    # the next admission moves it.
    assert db.sql("select ring_size, admitted, cardinality(ring) from smsao.rate_limit_keys") == [(350, 500, 100)]
    assert db.sql("select slot, chunk from smsao.rate_limit_hits order by chunk") == [(c, c) for c in range(4)]
    assert kept_attempts(db) == 500


def test_a_call_that_waited_for_a_chunk_move_reads_the_moved_chunk(db):
    """The race a chunk's number guards. Call A's snapshot sees the key at attempt 399 (its
    array not full), while one transaction B holds the key row after attempts 400 and 401,
    the second of which moved attempts 301-400 to the hits table as chunk 3, into the slot of
    chunk 0 (a ring of 101 spans 3 slots). B commits; A, re-checking the newest row after its
    wait, must not decide on chunk 0's old attempts, which its snapshot still sees in that
    slot. Attempts 301-401 are all inside the window, so A is refused."""
    me = Caller.user(db.create_user())
    for _ in range(3):                                  # attempts 1-300, each hundred aged out
        assert all(attempt(db, me, op="race", max_attempts=101) for _ in range(100))
        age_hits(db, 16)
    assert all(attempt(db, me, op="race", max_attempts=101) for _ in range(99))    # 301-399
    assert db.sql("select slot, chunk from smsao.rate_limit_hits order by slot") == [(0, 0), (1, 1), (2, 2)]
    answer = []
    with db.connect() as b, db.connect() as a:
        b.execute("begin")
        begin_request(b, me)
        assert [b.execute(RL, ["race", 101, 15]).fetchone()[0] for _ in range(2)] == [True, True]   # 400, 401
        a_pid = a.execute("select pg_backend_pid()").fetchone()[0]
        waiter = threading.Thread(target=lambda: answer.append(request(a, me, RL, ["race", 101, 15])[0][0]))
        waiter.start()
        while not db.one("select wait_event_type = 'Lock' from pg_stat_activity where pid = %s", [a_pid]):
            time.sleep(0.01)
        b.execute("commit")
        waiter.join()
    assert answer == [False]
    assert db.sql("select admitted, cardinality(ring) from smsao.rate_limit_keys") == [(401, 1)]
    assert db.sql("select slot, chunk from smsao.rate_limit_hits order by slot") == [(0, 3), (1, 1), (2, 2)]
