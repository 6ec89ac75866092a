"""`smsao-db integrity`: passes on a sound database, names the broken invariant after a
balance, a counter or the orphan bookkeeping is tampered with behind the triggers' back
(`session_replication_role = replica`, as a bulk load or a bad restore would)."""
from __future__ import annotations

import uuid

import pytest

from cli_support import smsao_db
from runner import integrity


def failing(url: str) -> dict[str, str]:
    return {r.name: r.detail for r in integrity.run(url) if not r.passed}


@pytest.fixture
def busy(db):
    """Users with balances, credit requests, SMS in the last hours and an orphaned owner."""
    users = [db.create_user(credits=100 * (i + 1)) for i in range(3)]
    db.sql("insert into public.credit_requests (user_id, amount) values (%s, 50)", [users[0]])
    db.sql("insert into public.sms_logs (user_id, recipient, message, status, created_at) "
           "select %s, '+244900000001', 'hi', s, now() - make_interval(hours => h) "
           "from unnest(array['sent', 'failed', 'delivered']) s, generate_series(0, 5) h", [users[1]])
    ghost = uuid.uuid4()
    db.sql("insert into public.sms_logs (user_id, recipient, message, status) values (%s, '+244900000002', 'x', 'sent')",
           [ghost])
    db.sql("insert into public.otp_codes (user_id, phone, code_hash, purpose, expires_at) "
           "values (%s, '+244900000002', 'h', 'login', now() + interval '5 minutes')", [ghost])
    db.users = users
    return db


def tamper(db, statement: str, params=None) -> None:
    with db.connect() as conn:
        conn.execute("set session_replication_role = replica")
        conn.execute(statement, params)


def test_a_sound_database_passes(busy):
    results = integrity.run(busy.url)
    assert [r.name for r in results if not r.passed] == []
    names = {r.name for r in results}
    assert {"balance_equals_ledger", "counter_total_users", "counter_pending_credit_requests",
            "counter_orphaned_sms_logs", "counter_orphaned_otp_codes", "counter_sms_hourly",
            "orphan_owners_recorded", "missing_owners_have_no_profile", "btree_indexes_amcheck"} == names
    amcheck = next(r for r in results if r.name == "btree_indexes_amcheck")
    assert "btree indexes" in amcheck.detail and not amcheck.detail.startswith("0 ")
    # Read-only: nothing but amcheck itself (in its own schema, out of the API) was created.
    assert busy.one("select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace "
                    "where extname = 'amcheck'") == "smsao_amcheck"


def test_a_balance_without_a_ledger_row_is_named(busy):
    tamper(busy, "update public.profiles set credits = credits + 5 where user_id = %s", [busy.users[2]])
    broken = failing(busy.url)
    assert list(broken) == ["balance_equals_ledger"]
    assert str(busy.users[2]) in broken["balance_equals_ledger"] and "credits 305, ledger 300" in \
        broken["balance_equals_ledger"]


@pytest.mark.parametrize("statement, name", [
    ("insert into public.credit_requests (user_id, amount) select user_id, 9 from public.profiles limit 1",
     "counter_pending_credit_requests"),
    ("update smsao.health_counters set value = value + 1 where id = "
     "(select min(id) from smsao.health_counters where metric = 'total_users')", "counter_total_users"),
    ("delete from public.sms_logs where id = (select max(id) from public.sms_logs where status = 'failed')",
     "counter_sms_hourly"),
])
def test_a_counter_out_of_step_is_named(busy, statement, name):
    tamper(busy, statement)
    assert list(failing(busy.url)) == [name]


def test_orphans_behind_the_triggers_back_are_named(busy):
    tamper(busy, "insert into public.otp_codes (user_id, phone, code_hash, purpose, expires_at) "
                 "values (gen_random_uuid(), '+244900000003', 'h', 'login', now())")
    assert set(failing(busy.url)) == {"counter_orphaned_otp_codes", "orphan_owners_recorded"}


def test_a_missing_owner_that_has_a_profile_is_named(busy):
    tamper(busy, "insert into smsao.missing_owners (user_id) values (%s)", [busy.users[0]])
    assert list(failing(busy.url)) == ["missing_owners_have_no_profile"]


def test_the_command_exits_1_with_one_line_per_failure(busy):
    ok = smsao_db("integrity", url=busy.url)
    assert ok.returncode == 0 and "all 9 invariants hold" in ok.stdout, ok.stdout + ok.stderr
    tamper(busy, "update public.profiles set credits = credits + 1 where user_id = %s", [busy.users[0]])
    tamper(busy, "update smsao.health_counters set value = value - 1 where id = "
                 "(select min(id) from smsao.health_counters where metric = 'total_users')")
    proc = smsao_db("integrity", url=busy.url)
    assert proc.returncode == 1
    fails = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL")]
    assert [ln.split(":")[0] for ln in fails] == ["FAIL balance_equals_ledger", "FAIL counter_total_users"]
    assert all("remedy:" in ln for ln in fails)
    assert "2 of 9 invariants broken" in proc.stdout


def test_not_an_smsao_database_is_one_line(empty_db_url):
    proc = smsao_db("integrity", url=empty_db_url)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "migrate upgrade head" in proc.stderr
