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
