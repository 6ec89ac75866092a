"""`smsao-db integrity`: passes on a sound database, names the broken invariant after a
balance, a counter or the orphan bookkeeping is tampered with behind the triggers' back
(`session_replication_role = replica`, as a bulk load or a bad restore would)."""
from __future__ import annotations

import uuid

import pytest

from cli_support import smsao_db
from runner.recovery import integrity


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
            "orphan_owners_recorded", "missing_owners_have_no_profile", "btree_indexes_amcheck",
            "analytics_business_months", "analytics_milestones", "analytics_event_firsts",
            "analytics_event_counts"} == names
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
    # A user who requested before: their first request stays what the analytics stored.
    ("insert into public.credit_requests (user_id, amount) select user_id, 9 from public.credit_requests limit 1",
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
    assert ok.returncode == 0 and "all 13 invariants hold" in ok.stdout, ok.stdout + ok.stderr
    tamper(busy, "update public.profiles set credits = credits + 1 where user_id = %s", [busy.users[0]])
    tamper(busy, "update smsao.health_counters set value = value - 1 where id = "
                 "(select min(id) from smsao.health_counters where metric = 'total_users')")
    proc = smsao_db("integrity", url=busy.url)
    assert proc.returncode == 1
    fails = [ln for ln in proc.stdout.splitlines() if ln.startswith("FAIL")]
    assert [ln.split(":")[0] for ln in fails] == ["FAIL balance_equals_ledger", "FAIL counter_total_users"]
    assert all("remedy:" in ln for ln in fails)
    assert "2 of 13 invariants broken" in proc.stdout


def test_not_an_smsao_database_is_one_line(empty_db_url):
    proc = smsao_db("integrity", url=empty_db_url)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "migrate upgrade head" in proc.stderr


@pytest.fixture
def sales(busy):
    """Purchases at two prices over two months, and a refund."""
    busy.sql("insert into public.credit_prices (valid_from, price_per_credit) values ('2026-01-01', 10), ('2026-02-10', 12)")
    for user, at in ((busy.users[0], "2026-01-05"), (busy.users[0], "2026-02-15"), (busy.users[1], "2026-02-20")):
        busy.sql("insert into public.credit_requests (user_id, amount, status, created_at, processed_at)"
                 " values (%s, 10, 'approved', %s, %s)", [user, at, at])
    busy.sql("insert into public.credit_transactions (user_id, amount, kind, created_at)"
             " values (%s, 2, 'refund', '2026-02-21')", [busy.users[1]])
    busy.sql("select smsao.refresh_business_months()")
    return busy


def test_analytics_rollups_pass_and_a_pending_recount_is_not_a_failure(sales):
    assert failing(sales.url) == {}
    assert sales.sql("select month::text, revenue from smsao.business_months order by 1") == [
        ("2026-01-01", 100), ("2026-02-01", 216), ("2026-03-01", 0)]
    # A new purchase marks its month: due for a recount at the next read, not broken.
    sales.sql("insert into public.credit_requests (user_id, amount, status, processed_at)"
              " values (%s, 5, 'approved', '2026-03-03')", [sales.users[2]])
    assert failing(sales.url) == {}


@pytest.mark.parametrize("statement, name, detail", [
    ("update smsao.business_months set revenue = revenue + 1 where month = '2026-02-01'",
     "analytics_business_months", "2026-02-01: rollup says revenue 217.00"),
    ("insert into public.credit_requests (user_id, amount, status, processed_at)"
     " select user_id, 5, 'approved', '2026-01-20' from public.profiles where credits = 300",
     "analytics_business_months analytics_milestones", "2026-01-01: rollup says revenue 100.00"),
    ("insert into public.campaigns (user_id, name) select user_id, 'c' from public.profiles where credits = 300",
     "analytics_milestones", "created_campaign of user"),
    ("update smsao.event_counts set events = events + 1 where ctid = (select min(ctid) from smsao.event_counts)",
     "analytics_event_counts", "counted"),
])
def test_an_analytics_rollup_out_of_step_is_named(sales, statement, name, detail):
    tamper(sales, statement)
    broken = failing(sales.url)
    assert list(broken) == name.split() and detail in broken[name.split()[0]], broken
    sales.sql("select smsao.rebuild_analytics()")
    assert failing(sales.url) == {}
