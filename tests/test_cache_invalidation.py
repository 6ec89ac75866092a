"""NOTIFY cache_invalidation from the table triggers, and the listener that applies it."""
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

from support import PROJECT_DIR
from runner.cache import Cache, CacheInvalidationListener, contacts_key, dashboard_stats_key, sms_logs_key
from support import Caller


def wait_for(predicate, timeout=5.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture
def listener_conn(db):
    conn = db.connect()
    conn.execute("listen cache_invalidation")
    yield conn
    conn.close()


def drain(conn, timeout=0.3) -> list[list[str]]:
    return [json.loads(n.payload) for n in conn.notifies(timeout=timeout)]


def test_a_5000_row_import_sends_one_notification_with_the_owner_keys(db, listener_conn):
    uid = db.create_user()
    drain(listener_conn)
    db.sql("insert into public.contacts (user_id, phone) "
           "select %s, '+24490' || lpad(g::text, 7, '0') from generate_series(1, 5000) g", [uid])
    assert drain(listener_conn) == [[f"contacts:{uid}", f"dashboard_stats:{uid}"]]


def test_app_writes_under_rls_notify_too(db, listener_conn):
    uid = db.create_user()
    drain(listener_conn)
    db.as_(Caller.user(uid), "insert into public.campaigns (user_id, name) values (%s, 'launch')", [uid])
    assert drain(listener_conn) == [[f"campaigns:{uid}", f"dashboard_stats:{uid}"]]
    db.as_(Caller.user(uid), "update public.profiles set full_name = 'Ana' where user_id = %s", [uid])
    assert drain(listener_conn) == [[f"profile:{uid}", f"credits:{uid}", f"dashboard_stats:{uid}"]]


def test_every_page_of_the_sms_log_and_the_balance_are_named(db, listener_conn):
    uid = db.create_user()
    drain(listener_conn)
    db.sql("insert into public.sms_logs (user_id, recipient) values (%s, '+244900000001'), (%s, '+244900000002')",
           [uid, uid])
    assert drain(listener_conn) == [[f"sms_logs:{uid}:*", f"dashboard_stats:{uid}"]]
    db.sql("insert into public.credit_transactions (user_id, amount) values (%s, 10)", [uid])
    payloads = drain(listener_conn)
    assert [f"credits:{uid}", f"dashboard_stats:{uid}"] in payloads  # the ledger row
    assert [f"profile:{uid}", f"credits:{uid}", f"dashboard_stats:{uid}"] in payloads  # the balance


def test_update_that_moves_rows_names_old_and_new_owner(db, listener_conn):
    a, b = sorted([db.create_user(), db.create_user()], key=str)
    db.sql("insert into public.contacts (user_id, phone) values (%s, '+244900000001')", [a])
    drain(listener_conn)
    db.sql("update public.contacts set user_id = %s where user_id = %s", [b, a])
    assert drain(listener_conn) == [[f"contacts:{a}", f"contacts:{b}", f"dashboard_stats:{a}", f"dashboard_stats:{b}"]]
    db.sql("delete from public.contacts where user_id = %s", [b])
    assert drain(listener_conn) == [[f"contacts:{b}", f"dashboard_stats:{b}"]]


def test_nothing_is_sent_for_a_rollback_or_a_statement_that_changed_no_row(db, listener_conn):
    uid = db.create_user()
    drain(listener_conn)
    with db.connect() as other:
        with pytest.raises(ZeroDivisionError), other.transaction():
            other.execute("insert into public.contacts (user_id, phone) values (%s, '+244900000001')", [uid])
            raise ZeroDivisionError
    db.sql("update public.contacts set name = 'x' where false")
    db.sql("delete from public.sms_logs where user_id = %s", [uid])
    assert drain(listener_conn) == []


def test_a_statement_touching_many_owners_sends_the_families_under_the_notify_limit(db, listener_conn):
    db.sql("insert into auth.users (id, email) select gen_random_uuid(), g || '@t.ao' from generate_series(1, 300) g")
    drain(listener_conn)
    db.sql("insert into public.contacts (user_id, phone) select user_id, '+244900000001' from public.profiles")
    assert drain(listener_conn) == [["contacts:*", "dashboard_stats:*"]]
    # 300 profiles x 3 keys would be ~47 kB; the family patterns fit easily.
    db.sql("update public.profiles set full_name = 'x'")
    assert drain(listener_conn) == [["profile:*", "credits:*", "dashboard_stats:*"]]


def test_truncate_drops_the_whole_family(db, listener_conn):
    db.sql("truncate public.sms_logs")
    assert drain(listener_conn) == [["sms_logs:*:*", "dashboard_stats:*"]]


# -- the listener ------------------------------------------------------------------------
def test_a_write_in_another_connection_invalidates_the_key_in_this_cache(db):
    uid, other = db.create_user(), db.create_user()
    cache = Cache()
    with CacheInvalidationListener(cache, db.url, poll_interval=0.1) as listener:
        assert listener.wait_listening()
        cache.set(contacts_key(uid), ["old"])
        cache.set(contacts_key(other), ["kept"])
        for page in range(3):
            cache.set(sms_logs_key(uid, page), ["page"])
        db.as_(Caller.user(uid), "insert into public.contacts (user_id, phone) values (%s, '+244900000009')", [uid])
        assert wait_for(lambda: contacts_key(uid) not in cache, timeout=3)
        db.sql("insert into public.sms_logs (user_id, recipient) values (%s, '+244900000001')", [uid])
        assert wait_for(lambda: not any(sms_logs_key(uid, p) in cache for p in range(3)), timeout=3)
        assert cache.get(contacts_key(other)) == ["kept"]


def test_listener_reconnects_after_its_connection_drops_and_clears_what_it_missed(db):
    uid = db.create_user()
    cache = Cache()
    with CacheInvalidationListener(cache, db.url, poll_interval=0.1) as listener:
        assert listener.wait_listening()
        pid = listener.backend_pid()
        db.sql("select pg_terminate_backend(%s)", [pid])
        assert wait_for(lambda: listener.connects == 2 and listener.listening.is_set(), timeout=10)
        assert listener.backend_pid() != pid
        # Anything cached before the reconnect was cleared; new invalidations still arrive.
        cache.set(dashboard_stats_key(uid), {"sent": 0})
        db.sql("insert into public.sms_logs (user_id, recipient) values (%s, '+244900000001')", [uid])
        assert wait_for(lambda: dashboard_stats_key(uid) not in cache, timeout=3)


def test_every_process_drops_what_another_process_changed(db):
    """A second Python process with its own cache and listener sees this process's write."""
    uid = db.create_user()
    child = textwrap.dedent(f"""
        import sys, time
        from runner.cache import Cache, CacheInvalidationListener
        cache = Cache()
        listener = CacheInvalidationListener(cache, {db.url!r}, poll_interval=0.1).start()
        assert listener.wait_listening()
        cache.set("credits:{uid}", 100)
        cache.set("credits:{uuid.uuid4()}", 5)
        print("ready", flush=True)
        deadline = time.monotonic() + 10
        while "credits:{uid}" in cache and time.monotonic() < deadline:
            time.sleep(0.02)
        print("dropped" if "credits:{uid}" not in cache else "still cached", len(cache), flush=True)
        listener.stop()
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True,
                            cwd=PROJECT_DIR, env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)})
    try:
        assert proc.stdout.readline().strip() == "ready"
        db.sql("insert into public.credit_transactions (user_id, amount) values (%s, 25)", [uid])
        assert proc.stdout.readline().split() == ["dropped", "1"]
    finally:
        proc.wait(15)
    assert proc.returncode == 0
