"""Issue 19: revision 0011_scale on a database of the previous release with data. The audit
rows move into their months with every row and id kept, the rate limiter's state moves onto
the key rows without forgetting an attempt, and one step down puts it all back."""
from __future__ import annotations

import uuid

import psycopg

from conftest import Db
from runner import migrate
from support import Caller

RL = "select public.enhanced_security_rate_limit(%s, %s, %s)"
AUDIT = ("admin_audit_logs", "pii_access_audit", "function_call_audit")


def fingerprint(db: Db) -> dict[str, tuple]:
    """Each audit table's rows, ids included: count and an md5 of every row in id order."""
    return {t: db.sql(f"select count(*), md5(coalesce(string_agg(x::text, '|' order by x.id), '')) "
                      f"from public.{t} x")[0] for t in AUDIT}


def seed_release_data(db: Db) -> tuple[Caller, Caller]:
    uid = uuid.uuid4()
    db.sql("insert into auth.users (id, email) values (%s, 'upgrade@test.ao')", [uid])
    me = Caller.user(uid)
    for months in (37, 30, 25, 24, 13, 1, 0):
        at = f"now() - interval '{months} months' - interval '1 hour'"
        db.sql(f"insert into public.admin_audit_logs (action, new_values, created_at) "
               f"select 'act' || g, jsonb_build_object('g', g), {at} from generate_series(1, 20) g")
        db.sql(f"insert into public.pii_access_audit (table_name, fields, created_at) "
               f"select 'profiles', array['email'], {at} from generate_series(1, 10) g")
        db.sql(f"insert into public.function_call_audit (function_name, outcome, created_at) "
               f"select 'f', 'ok', {at} from generate_series(1, 15) g")
    # The limiter at its limit on a small key (its ring moves onto the key row) and part way
    # on a large one (its ring stays in rate_limit_hits).
    assert [db.as_(me, RL, ["small", 3, 60])[0][0] for _ in range(4)] == [True] * 3 + [False]
    assert all(db.as_(me, RL, ["large", 150, 60])[0][0] for _ in range(149))
    return me, Caller.user(uid)


def test_upgrade_from_the_previous_release_keeps_every_row_and_one_step_down_too(empty_db_url):
    migrate.run("upgrade", empty_db_url, "0006_vitals")
    db = Db(empty_db_url)
    me, _ = seed_release_data(db)
    before = fingerprint(db)
    refusals = db.one("select count(*) from public.function_call_audit where outcome = 'rate_limited'")

    migrate.run("upgrade", empty_db_url, "0011_scale")
    assert fingerprint(db) == before
    for t in AUDIT:
        assert db.one("select relkind from pg_class where oid = %s::regclass", [f"public.{t}"]) == "p"
        # Every row sits in a month of its own; none in the default partition.
        assert db.one(f"select count(*) from public.{t}_default") == 0
        assert db.one("select count(*) from smsao.audit_partitions() where parent = %s and from_ts is not null", [t]) >= 38
        newest = db.one(f"select max(id) from public.{t}")
        db.sql(f"insert into public.{t} " + {"admin_audit_logs": "(action) values ('after')",
                                             "pii_access_audit": "(table_name) values ('after')",
                                             "function_call_audit": "(function_name, outcome) values ('after', 'ok')"}[t])
        assert db.one(f"select id from public.{t} order by id desc limit 1") == newest + 1   # ids continue
    # The limiter forgot nothing: the small key is still full, the large one has one left.
    assert db.one("select cardinality(ring) from smsao.rate_limit_keys where operation_type = 'small'") == 3
    assert db.as_(me, RL, ["small", 3, 60])[0][0] is False
    assert [db.as_(me, RL, ["large", 150, 60])[0][0] for _ in range(2)] == [True, False]
    assert db.one("select count(*) from public.function_call_audit where outcome = 'rate_limited'") == refusals + 1
    after_upgrade = fingerprint(db)

    migrate.run("downgrade", empty_db_url, "-1")
    assert migrate.run("current", empty_db_url) is not None
    assert fingerprint(db) == after_upgrade
    for t in AUDIT:
        assert db.one("select relkind from pg_class where oid = %s::regclass", [f"public.{t}"]) == "r"
    assert db.one("select count(*) from pg_extension where extname = 'pg_partman'") == 0
    # The released limiter reads the rings moved back to rate_limit_hits.
    assert db.as_(me, RL, ["small", 3, 60])[0][0] is False
    assert db.as_(me, RL, ["large", 150, 60])[0][0] is False
    with psycopg.connect(empty_db_url) as conn:                # the append-only guard is back
        try:
            conn.execute("delete from public.admin_audit_logs")
            raise AssertionError("the delete went through")
        except psycopg.Error as exc:
            assert exc.sqlstate == "42501"
    migrate.run("upgrade", empty_db_url, "head")
    assert fingerprint(db) == after_upgrade


def newest(db: Db, op: str) -> int:
    """The key's newest attempt number, whichever shape its ring has (0011: the key row;
    0013: the newest of its chunks, the key row holding a hint)."""
    has_chunks = db.one("select exists (select from pg_attribute where attrelid = 'smsao.rate_limit_hits'::regclass"
                        " and attname = 'chunk' and not attisdropped)")
    if not has_chunks:
        return db.one("select admitted from smsao.rate_limit_keys where operation_type = %s", [op])
    return db.one("select max(c.last) from smsao.rate_limit_hits c join smsao.rate_limit_keys k "
                  "using (caller_key, operation_type) where k.operation_type = %s", [op])


def test_large_rings_move_into_chunks_and_back_keeping_every_attempt(empty_db_url):
    """0011_scale keeps rings of more than 100 attempts one row per attempt; 0013_scale_speed
    keeps them in chunks of 100. Up and one step down, every attempt inside its window stays:
    a ring part way through its first lap, a full one, and one wrapped past its end whose
    older half has left the window."""
    migrate.run("upgrade", empty_db_url, "0011_scale")
    db = Db(empty_db_url)
    uid = uuid.uuid4()
    db.sql("insert into auth.users (id, email) values (%s, 'rings@test.ao')", [uid])
    me = Caller.user(uid)
    burst = ("select count(*) filter (where ok) from generate_series(1, %s) i, "
             "lateral (select public.enhanced_security_rate_limit(%s, %s + 0 * i, 60) as ok) x")
    assert db.as_(me, burst, [149, "partway", 150])[0][0] == 149
    assert db.as_(me, burst, [260, "full", 250])[0][0] == 250
    assert db.as_(me, burst, [120, "wrapped", 120])[0][0] == 120
    # The wrapped ring's 120 attempts leave the window; 70 more are made (the ring wraps).
    db.sql("update smsao.rate_limit_hits set at = at - interval '61 minutes' where operation_type = 'wrapped'")
    assert db.as_(me, burst, [70, "wrapped", 120])[0][0] == 70

    def check(expect_newest: dict[str, int]) -> None:
        for op, n in expect_newest.items():
            assert newest(db, op) == n, op

    migrate.run("upgrade", empty_db_url, "0013_scale_speed")
    check({"partway": 149, "full": 250, "wrapped": 190})
    assert db.sql("select chunk, last, cardinality(ring) from smsao.rate_limit_hits where operation_type = 'wrapped' "
                  "order by chunk") == [(0, 190, 100), (1, 120, 20)]
    # Each ring admits exactly what its window has room for.
    assert db.as_(me, burst, [3, "partway", 150])[0][0] == 1
    assert db.as_(me, burst, [3, "full", 250])[0][0] == 0
    assert db.as_(me, burst, [60, "wrapped", 120])[0][0] == 50
    check({"partway": 150, "full": 250, "wrapped": 240})

    migrate.run("downgrade", empty_db_url, "-1")
    assert db.one("select exists (select from pg_attribute where attrelid = 'smsao.rate_limit_hits'::regclass "
                  "and attname = 'seq' and not attisdropped)") is True
    check({"partway": 150, "full": 250, "wrapped": 240})
    # The released limiter refuses them all: every attempt inside the window came back.
    for op, limit in (("partway", 150), ("full", 250), ("wrapped", 120)):
        assert db.as_(me, burst, [2, op, limit])[0][0] == 0, op
    migrate.run("upgrade", empty_db_url, "head")
    check({"partway": 150, "full": 250, "wrapped": 240})
    for op, limit in (("partway", 150), ("full", 250), ("wrapped", 120)):
        assert db.as_(me, burst, [2, op, limit])[0][0] == 0, op
