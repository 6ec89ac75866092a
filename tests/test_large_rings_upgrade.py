"""Issue 19: revision 0014_large_rings on a limiter state left by the previous release
(0013_scale_speed), where a large limit's attempts are all in rate_limit_hits. The upgrade
forgets no attempt, and one step down moves the attempts kept in the key rows' arrays back."""
from __future__ import annotations

import uuid

from conftest import Db
from runner import migrate
from support import Caller
from test_rate_limit import age_hits

RL = "select public.enhanced_security_rate_limit(%s, %s, %s)"


def calls(db: Db, me: Caller, op: str, limit: int, n: int) -> list[bool]:
    return [db.as_(me, RL, [op, limit, 60])[0][0] for _ in range(n)]


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
    age_hits(db, 61)
    assert all(calls(db, me, "wrapped", 101, 50))
    assert all(calls(db, me, "large", 250, 230))
    assert calls(db, me, "small", 3, 4) == [True] * 3 + [False]

    migrate.run("upgrade", empty_db_url, "head")
    assert db.sql("select operation_type, cardinality(ring) from smsao.rate_limit_keys order by 1") == \
        [("large", 0), ("small", 3), ("wrapped", 0)]
    assert hits(db, "large") == (230, 1, 230) and hits(db, "wrapped") == (101, 51, 151)
    # Nothing forgotten: each key admits exactly what its window has left.
    assert calls(db, me, "large", 250, 21) == [True] * 20 + [False]
    assert calls(db, me, "wrapped", 101, 52) == [True] * 51 + [False]
    assert calls(db, me, "small", 3, 1) == [False]
    assert db.sql("select operation_type, cardinality(ring) from smsao.rate_limit_keys order by 1") == \
        [("large", 20), ("small", 3), ("wrapped", 51)]

    migrate.run("downgrade", empty_db_url, "-1")
    assert migrate.run("current", empty_db_url) is not None
    # The arrays' attempts are back in the hits table, as the released limiter reads them.
    assert db.sql("select operation_type, ring is null from smsao.rate_limit_keys order by 1") == \
        [("large", True), ("small", False), ("wrapped", True)]
    assert hits(db, "large") == (250, 1, 250) and hits(db, "wrapped") == (101, 102, 202)
    assert calls(db, me, "large", 250, 1) == [False]
    assert calls(db, me, "wrapped", 101, 1) == [False]
    age_hits(db, 61)
    assert calls(db, me, "wrapped", 101, 102) == [True] * 101 + [False]

    migrate.run("upgrade", empty_db_url, "head")
    assert calls(db, me, "wrapped", 101, 1) == [False]
    assert db.one("select cardinality(ring) from smsao.rate_limit_keys where operation_type = 'large'") == 0
