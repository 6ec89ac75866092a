"""Issue 10: bulk statements keep every invariant (counters, ledger, orphan accounting, cache
keys) exact, alone and mixed with concurrent single-row writers, checked against a recount."""
from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest

from monitoring_support import add_sms, health_and_counts

BULK_USERS = ("insert into auth.users (id, email) "
              "select gen_random_uuid(), 'bulk' || i || '@test.ao' from generate_series(1, %s) i")


def assert_counters_exact(db) -> None:
    report, counts = health_and_counts(db)
    assert {k: report["metrics"][k] for k in counts} == counts


def balances_equal_ledger(db) -> bool:
    return db.one("""select count(*) = 0 from public.profiles p
                     where p.credits <> coalesce((select sum(t.amount) from public.credit_transactions t
                                                  where t.user_id = p.user_id), 0)""")


def test_one_statement_of_signups_gives_every_user_a_profile_and_role(db):
    db.sql(BULK_USERS, [3000])
    assert db.one("select count(*) from public.profiles") == 3000
    assert db.one("select count(*) from public.user_roles where role = 'user'") == 3000
    assert db.one("select count(*) from auth.users u left join public.profiles p on p.user_id = u.id "
                  "where p.user_id is null") == 0
    assert_counters_exact(db)


def test_a_bulk_signup_notifies_the_cache_once(db):
    listener = db.connect()
    listener.execute("listen cache_invalidation")
    db.sql(BULK_USERS, [500])
    payloads = [json.loads(n.payload) for n in listener.notifies(timeout=0.5, stop_after=10)]
    listener.close()
    # 500 users' keys do not fit one payload: the families go, once.
    assert payloads == [["profile:*", "credits:*", "dashboard_stats:*"]]


def test_bulk_ledger_statements_move_each_balance_once(db):
    db.sql(BULK_USERS, [200])
    db.sql("insert into public.credit_transactions (user_id, amount) "
           "select p.user_id, a from public.profiles p, (values (100), (50), (-30)) v(a)")
    assert db.one("select count(distinct credits) from public.profiles") == 1
    assert db.one("select min(credits) from public.profiles") == 120
    db.sql("update public.profiles set credits = credits + 5 where email like 'bulk1%%'")
    adjusted = db.one("select count(*) from public.profiles where email like 'bulk1%%'")
    assert db.one("select count(*) from public.credit_transactions where kind = 'adjustment' and amount = 5") \
        == adjusted
    db.sql("insert into public.profiles (user_id, credits) "
           "select id, 7 from auth.users where false")  # an empty statement changes nothing
    assert balances_equal_ledger(db)


def test_concurrent_bulk_ledger_statements_never_deadlock(db):
    db.sql(BULK_USERS, [300])
    errors = []

    def credit(order: str):
        try:
            with db.connect() as conn:
                for _ in range(5):
                    conn.execute("insert into public.credit_transactions (user_id, amount) "
                                 f"select user_id, 1 from public.profiles order by user_id {order}")
        except psycopg.Error as exc:
            errors.append(exc)

    threads = [threading.Thread(target=credit, args=(o,)) for o in ("asc", "desc", "asc", "desc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.one("select min(credits) = 20 and max(credits) = 20 from public.profiles")
    assert balances_equal_ledger(db)


@pytest.mark.parametrize("users", [2, 5, 2000])
def test_ledger_balances_are_taken_in_user_order_whatever_the_table_size(db, users):
    """The balance UPDATE must reach profiles in key order at every size (a tiny table
    invites a plan that reads it in physical order): opposing statements on the same users,
    many times, never deadlock."""
    db.sql(BULK_USERS, [users])
    # Physical order unlike key order: rewrite half of the rows so they move to the end.
    db.sql("update public.profiles set full_name = 'moved' where user_id < (select percentile_disc(0.5) "
           "within group (order by user_id) from public.profiles)")
    rounds, errors = (40 if users < 100 else 3), []

    def credit(order: str):
        try:
            with db.connect() as conn:
                for _ in range(rounds):
                    conn.execute("insert into public.credit_transactions (user_id, amount) "
                                 f"select user_id, 1 from public.profiles order by user_id {order}")
        except psycopg.Error as exc:
            errors.append(exc)

    threads = [threading.Thread(target=credit, args=(o,)) for o in ("asc", "desc", "asc", "desc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.one("select min(credits) = max(credits) and max(credits) = %s from public.profiles", [4 * rounds])
    assert balances_equal_ledger(db)


def test_a_ledger_row_stamps_updated_at_and_a_direct_update_still_does(db):
    db.sql(BULK_USERS, [2])
    db.sql("update public.profiles set updated_at = '2020-01-01'")     # a trusted writer's own value
    assert db.one("select count(*) from public.profiles where updated_at = '2020-01-01'") == 2
    first = db.one("select user_id from public.profiles order by user_id limit 1")
    db.sql("insert into public.credit_transactions (user_id, amount) values (%s, 3)", [first])
    assert db.one("select updated_at > now() - interval '1 minute' from public.profiles where user_id = %s",
                  [first]) is True
    db.sql("update public.profiles set full_name = 'x' where user_id <> %s", [first])
    assert db.one("select count(*) from public.profiles where updated_at > now() - interval '1 minute'") == 2


def test_bulk_sms_and_otp_statements_keep_counters_exact(db):
    db.sql(BULK_USERS, [100])
    users = [r[0] for r in db.sql("select user_id from public.profiles")]
    db.sql("insert into public.sms_logs (user_id, recipient, status) "
           "select u, '+244900000000', case when i %% 4 = 0 then 'failed' else 'sent' end "
           "from unnest(%s::uuid[]) u, generate_series(1, 50) i", [users])
    db.sql("insert into public.sms_logs (user_id, recipient) select gen_random_uuid(), '+244900000000' "
           "from generate_series(1, 300)")                                    # orphans
    db.sql("insert into public.otp_codes (user_id, phone, code_hash) "
           "select case when i % 2 = 0 then gen_random_uuid() end, '+244900000001', 'h' "
           "from generate_series(1, 400) i")
    assert_counters_exact(db)
    db.sql("update public.sms_logs set status = 'failed' where status = 'sent' and id % 3 = 0")
    db.sql("delete from auth.users where id = any(%s)", [users[:30]])           # their logs orphaned
    db.sql("delete from public.sms_logs where id % 5 = 0")
    db.sql("delete from public.otp_codes where user_id is not null and random() < 0.5")
    assert_counters_exact(db)


def test_bulk_statements_mixed_with_single_row_writers_stay_exact(db):
    db.sql(BULK_USERS, [50])
    stop = threading.Event()
    errors = []

    def single_row_writer():
        try:
            with db.connect() as conn:
                while not stop.is_set():
                    uid = uuid.uuid4()
                    conn.execute("insert into auth.users (id, email) values (%s, 's@test.ao')", [uid])
                    conn.execute("insert into public.sms_logs (user_id, recipient, status) "
                                 "values (%s, '+244900000000', 'failed')", [uid])
                    conn.execute("insert into public.credit_transactions (user_id, amount) values (%s, 3)", [uid])
        except psycopg.Error as exc:
            errors.append(exc)

    writers = [threading.Thread(target=single_row_writer) for _ in range(3)]
    for w in writers:
        w.start()
    try:
        for _ in range(3):
            db.sql(BULK_USERS, [2000])
            add_sms(db, db.one("select user_id from public.profiles limit 1"), status="failed", n=2000)
            db.sql("insert into public.credit_transactions (user_id, amount) "
                   "select user_id, 2 from public.profiles")
            db.sql("delete from auth.users where email like 'bulk1%%'")
    finally:
        stop.set()
        for w in writers:
            w.join()
    assert errors == []
    assert_counters_exact(db)
    assert balances_equal_ledger(db)
