"""Issue 19: revision 0014_large_rings on a limiter state left by the previous release
(0013_scale_speed), where a large limit's attempts are one rate_limit_hits row each. The
upgrade turns them into chunks of 100 and an array on the key row without forgetting an
attempt, and one step down turns them back."""
from __future__ import annotations

import uuid

from conftest import Db
from runner import migrate
from support import Caller

RL = "select public.enhanced_security_rate_limit(%s, %s, %s)"


def calls(db: Db, me: Caller, op: str, limit: int, n: int) -> list[bool]:
    return [db.as_(me, RL, [op, limit, 60])[0][0] for _ in range(n)]


def age_released(db: Db, minutes: int) -> None:
    """The clock moving forward, on the released state's shape: one hits row per attempt,
    and rings on the key rows only for small limits."""
    db.sql("update smsao.rate_limit_hits set at = at - make_interval(mins => %s)", [minutes])
    db.sql("update smsao.rate_limit_keys set ring = array(select r - make_interval(mins => %s) "
           "from unnest(ring) with ordinality as u(r, i) order by i) where ring is not null", [minutes])


def hits(db: Db, op: str) -> tuple:
    return db.sql("select count(*), min(seq), max(seq) from smsao.rate_limit_hits where operation_type = %s", [op])[0]


def test_large_rings_upgrade_and_downgrade_keep_every_attempt(empty_db_url):
    migrate.run("upgrade", empty_db_url, "0013_scale_speed")
    db = Db(empty_db_url)
    uid = uuid.uuid4()
    db.sql("insert into auth.users (id, email) values (%s, 'rings@test.ao')", [uid])
    me = Caller.user(uid)
    # The released limiter: a large key part way (230 of 250), one whose ring has wrapped
    # (101 attempts an hour old, 50 new), and a small key at its limit.
    assert all(calls(db, me, "wrapped", 101, 101))
    age_released(db, 61)
    assert all(calls(db, me, "wrapped", 101, 50))
    assert all(calls(db, me, "large", 250, 230))
    assert calls(db, me, "small", 3, 4) == [True] * 3 + [False]

    migrate.run("upgrade", empty_db_url, "head")
    # Chunks up to the last multiple of 100 (the wrapped key's attempts 1-50, which its ring no
    # longer kept, as '-infinity'), the newer attempts in the array.
    assert db.sql("select operation_type, cardinality(ring) from smsao.rate_limit_keys order by 1") == \
        [("large", 30), ("small", 3), ("wrapped", 51)]
    assert db.sql("select operation_type, chunk, slot, (select count(*) from unnest(stamps) r where r > '-infinity') "
                  "from smsao.rate_limit_hits order by 1, 2") == \
        [("large", 0, 0, 100), ("large", 1, 1, 100), ("wrapped", 0, 0, 50)]
    # Nothing forgotten: each key admits exactly what its window has left.
    assert calls(db, me, "large", 250, 21) == [True] * 20 + [False]
    assert calls(db, me, "wrapped", 101, 52) == [True] * 51 + [False]
    assert calls(db, me, "small", 3, 1) == [False]
    assert db.sql("select operation_type, cardinality(ring) from smsao.rate_limit_keys order by 1") == \
        [("large", 50), ("small", 3), ("wrapped", 2)]

    migrate.run("downgrade", empty_db_url, "-1")
    assert migrate.run("current", empty_db_url) is not None
    # The arrays' attempts are back in the hits table, as the released limiter reads them.
    assert db.sql("select operation_type, ring is null from smsao.rate_limit_keys order by 1") == \
        [("large", True), ("small", False), ("wrapped", True)]
    assert hits(db, "large") == (250, 1, 250) and hits(db, "wrapped") == (101, 102, 202)
    assert calls(db, me, "large", 250, 1) == [False]
    assert calls(db, me, "wrapped", 101, 1) == [False]
    age_released(db, 61)
    assert calls(db, me, "wrapped", 101, 102) == [True] * 101 + [False]

    migrate.run("upgrade", empty_db_url, "head")
    assert calls(db, me, "wrapped", 101, 1) == [False]
    assert db.one("select cardinality(ring) from smsao.rate_limit_keys where operation_type = 'large'") == 50
