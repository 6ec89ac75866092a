"""Analytics behaviour (CONTRACT section 7): track_event's rules and rate limit, who may
read the figures, bad arguments, audit of admin writes and reads, milestones from bulk and
concurrent writes, and the GA4 outbox written in the same transaction."""
from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest

from support import ANON, SERVICE, Caller


def sqlstate(db, caller, query, params=None) -> str | None:
    try:
        db.as_(caller, query, params)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def test_track_event_records_the_callers_event_which_only_they_read(db):
    me, other = db.create_user(), db.create_user()
    db.as_(Caller.user(me), "select public.track_event('opened_app', '{\"screen\": \"home\"}')")
    db.as_(Caller.user(me), "select public.track_event('opened_app')")
    assert db.as_(Caller.user(me), "select event_name, properties from public.business_events order by id") == [
        ("opened_app", {"screen": "home"}), ("opened_app", {})]
    assert db.as_(Caller.user(other), "select count(*) from public.business_events") == [(0,)]
    admin = db.create_user(admin=True)
    assert db.as_(Caller.user(admin), "select count(*) from public.business_events") == [(0,)]
    assert db.sql("select sum(events) from smsao.event_counts where event_name = 'opened_app'") == [(2,)]


@pytest.mark.parametrize("name, props, message", [
    (None, "{}", "event_name"),
    ("A_bad", "{}", "event_name"),
    ("x", "{}", "event_name"),                        # at least two characters
    ("e" * 64, "{}", "event_name"),
    ("sent_sms", "{}", "built-in milestone"),
    ("ok_event", None, "properties"),
    ("ok_event", "[1, 2]", "properties"),
    ("ok_event", "\"text\"", "properties"),
    ("ok_event", json.dumps({"k": "v" * 4100}), "4096"),
    ("ok_event", json.dumps({"email": "x"}), "personal data"),
    ("ok_event", json.dumps({"to": "someone@example.com"}), "personal data"),
    ("ok_event", json.dumps({"to": "+244923456789"}), "personal data"),
])
def test_track_event_refuses_bad_arguments_and_writes_nothing(db, name, props, message):
    me = db.create_user()
    with pytest.raises(psycopg.Error) as err:
        db.as_(Caller.user(me), "select public.track_event(%s, %s::jsonb)", [name, props])
    assert err.value.sqlstate == "22023" and message in str(err.value)
    assert db.one("select count(*) from public.business_events") == 0
    assert db.one("select count(*) from smsao.rate_limit_keys") == 0


def test_track_event_properties_of_exactly_4096_bytes_pass(db):
    me = db.create_user()
    props = {"k": ""}
    props["k"] = "v" * (4096 - len(json.dumps(props, separators=(", ", ": "))))
    assert len(json.dumps(props, separators=(", ", ": ")).encode()) == 4096
    db.as_(Caller.user(me), "select public.track_event('big_event', %s::jsonb)", [json.dumps(props)])
    assert db.one("select octet_length(properties::text) from public.business_events") == 4096


def test_track_event_is_for_active_signed_in_users(db):
    suspended = db.create_user(status="suspended")
    assert sqlstate(db, Caller.user(suspended), "select public.track_event('opened_app')") == "42501"
    assert sqlstate(db, ANON, "select public.track_event('opened_app')") == "42501"
    assert sqlstate(db, SERVICE, "select public.track_event('opened_app')") == "42501"
    me = db.create_user()
    assert sqlstate(db, Caller.user(me, session_id=uuid.uuid4()), "select public.track_event('opened_app')") == "42501"
    assert db.one("select count(*) from public.business_events") == 0


def test_track_event_is_rate_limited_at_120_a_minute(db):
    me = db.create_user()
    for _ in range(120):
        db.as_(Caller.user(me), "select public.track_event('tapped')")
    assert sqlstate(db, Caller.user(me), "select public.track_event('tapped')") == "PT429"
    assert db.one("select count(*) from public.business_events") == 120


READERS = [
    ("select * from public.business_metrics('2026-01-01', '2026-03-01')"),
    ("select * from public.conversion_funnel(array['signed_up', 'sent_sms'], now() - interval '1 day', now())"),
    ("select * from public.retention_cohorts('2026-01-01', '2026-03-01')"),
]


@pytest.mark.parametrize("query", READERS)
def test_readers_are_for_admins_and_service_role_and_audited(db, query):
    user, admin = db.create_user(), db.create_user(admin=True)
    assert sqlstate(db, Caller.user(user), query) == "42501"
    assert sqlstate(db, ANON, query) == "42501"
    assert db.as_(Caller.user(admin), query)
    assert db.as_(SERVICE, query)
    name = query.split("public.")[1].split("(")[0]
    assert db.sql("select admin_id from public.admin_audit_logs where action = %s order by id", [name]) == [
        (admin,), (None,)]


@pytest.mark.parametrize("query, argument", [
    ("select * from public.business_metrics(null, '2026-01-01')", "from_month"),
    ("select * from public.business_metrics('2026-01-02', '2026-03-01')", "from_month"),
    ("select * from public.business_metrics('2026-01-01', '2026-03-15')", "to_month"),
    ("select * from public.business_metrics('2026-03-01', '2026-01-01')", "to_month"),
    ("select * from public.business_metrics('2000-01-01', '2026-01-01')", "to_month"),
    ("select * from public.retention_cohorts('2026-01-01', null)", "to_month"),
    ("select * from public.conversion_funnel(null, now() - interval '1 day', now())", "steps"),
    ("select * from public.conversion_funnel(array['signed_up'], now() - interval '1 day', now())", "steps"),
    ("select * from public.conversion_funnel(array_fill('a_b'::text, array[11]), now() - interval '1 day', now())",
     "steps"),
    ("select * from public.conversion_funnel(array['signed_up', null], now() - interval '1 day', now())", "steps[2]"),
    ("select * from public.conversion_funnel(array['signed_up', 'Bad'], now() - interval '1 day', now())", "steps[2]"),
    ("select * from public.conversion_funnel(array['signed_up', 'sent_sms'], null, now())", "since"),
    ("select * from public.conversion_funnel(array['signed_up', 'sent_sms'], now(), now())", "until"),
    ("select * from public.conversion_funnel(array['signed_up', 'sent_sms'], now() - interval '1 day', now(),"
     " interval '-1 day')", "within"),
    ("select * from public.conversion_funnel(array['signed_up', 'sent_sms'], now() - interval '1 day', now(), null)",
     "within"),
])
def test_readers_refuse_bad_arguments_naming_them(db, query, argument):
    with pytest.raises(psycopg.Error) as err:
        db.as_(SERVICE, query)
    assert err.value.sqlstate == "22023"
    assert str(err.value).startswith(argument)


def test_admins_maintain_prices_and_spend_audited(db):
    admin, user = db.create_user(admin=True), db.create_user()
    as_admin = Caller.user(admin)
    db.as_(as_admin, "insert into public.credit_prices (valid_from, price_per_credit) values ('2026-01-01', 10)")
    db.as_(as_admin, "update public.credit_prices set price_per_credit = 12")
    db.as_(as_admin, "insert into public.acquisition_spend (month, channel, amount) values ('2026-01-01', 'radio', 500)")
    db.as_(as_admin, "delete from public.acquisition_spend")
    assert sqlstate(db, Caller.user(user), "insert into public.credit_prices (valid_from, price_per_credit)"
                                           " values ('2026-02-01', 1)") == "42501"
    rows = db.sql("select admin_id, action, old_values ->> 'price_per_credit', new_values ->> 'price_per_credit'"
                  " from public.admin_audit_logs order by id")
    assert rows == [(admin, "insert_credit_prices", None, "10.0000"),
                    (admin, "update_credit_prices", "10.0000", "12.0000"),
                    (admin, "insert_acquisition_spend", None, None),
                    (admin, "delete_acquisition_spend", None, None)]


def test_a_bulk_statement_records_each_users_first_time_once(db):
    users = [db.create_user() for _ in range(3)]
    db.sql("""insert into public.sms_logs (user_id, recipient, created_at)
              select u, '+244900000001', '2026-01-01'::timestamptz + i * interval '1 hour'
              from unnest(%s::uuid[]) u, generate_series(1, 50) i""", [users])
    assert db.sql("select count(*), min(first_at) from smsao.user_milestones where milestone = 'sent_sms'") == [
        (3, db.one("select '2026-01-01 01:00+00'::timestamptz"))]
    # An earlier-dated SMS moves the first time and its day count.
    db.sql("insert into public.sms_logs (user_id, recipient, created_at) values (%s, '+244900000001', '2025-12-31 10:00+00')",
           [users[0]])
    assert db.sql("select day::text, sum(events)::int from smsao.event_counts where event_name = 'sent_sms'"
                  " group by 1 having sum(events) <> 0 order by 1") == [("2025-12-31", 1), ("2026-01-01", 2)]


def test_concurrent_first_sms_of_one_user_counts_once(db):
    me = db.create_user()
    barrier = threading.Barrier(4)

    def send(i):
        with db.connect() as conn:
            barrier.wait()
            conn.execute("insert into public.sms_logs (user_id, recipient, created_at)"
                         " values (%s, '+244900000001', '2026-01-01'::timestamptz + %s * interval '1 minute')", [me, i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.one("select first_at from smsao.user_milestones where user_id = %s and milestone = 'sent_sms'", [me]) == \
        db.one("select '2026-01-01 00:00+00'::timestamptz")
    assert db.one("select sum(events) from smsao.event_counts where event_name = 'sent_sms'") == 1


def test_opted_in_events_are_queued_with_the_write_under_a_pseudonym(db):
    admin, buyer = db.create_user(admin=True), db.create_user()
    assert sqlstate(db, Caller.user(buyer), "select public.set_ga4_export('purchased_credits', true)") == "42501"
    db.as_(Caller.user(admin), "select public.set_ga4_export('purchased_credits', true)")
    db.as_(Caller.user(admin), "select public.set_ga4_export('opened_app', true)")
    request = db.as_(Caller.user(buyer), "select public.request_credits(10)")[0][0]
    with pytest.raises(psycopg.Error):
        with db.conn.transaction():
            db.sql("update public.credit_requests set status = 'approved', processed_at = now() where id = %s", [request])
            raise psycopg.Error("rolled back")
    assert db.one("select count(*) from smsao.ga4_outbox") == 0
    db.as_(Caller.user(admin), "select public.approve_credit_request(%s)", [request])
    db.as_(Caller.user(buyer), "select public.track_event('opened_app', '{\"screen\": \"home\"}')")
    db.as_(Caller.user(buyer), "select public.track_event('not_exported')")
    rows = db.sql("select client_id, event_name, params from smsao.ga4_outbox order by id")
    assert [r[1:] for r in rows] == [("purchased_credits", {}), ("opened_app", {"screen": "home"})]
    pseudonym = rows[0][0]
    assert rows[1][0] == pseudonym and len(pseudonym) == 64 and str(buyer).replace("-", "") not in pseudonym
    # A keyed hash: not the plain hash of the id.
    assert pseudonym != db.one("select encode(sha256(uuid_send(%s::uuid)), 'hex')", [buyer])
    assert db.sql("select action, target_id from public.admin_audit_logs where action = 'set_ga4_export' order by id") == [
        ("set_ga4_export", "purchased_credits"), ("set_ga4_export", "opened_app")]


def test_a_read_only_transaction_recounts_instead_of_refreshing(db):
    """A standby cannot refresh the monthly rollup: the figures are recounted from the base
    tables instead. The audited readers refuse there (25006) rather than read unaudited."""
    buyer = db.create_user()
    db.sql("insert into public.credit_prices (valid_from, price_per_credit) values ('2026-01-01', 2)")
    db.sql("insert into public.credit_requests (user_id, amount, status, processed_at)"
           " values (%s, 10, 'approved', '2026-02-03')", [buyer])
    months = "select month::text, revenue, paying_customers from smsao.fresh_business_months() order by 1"
    with db.conn.transaction(force_rollback=True):
        db.sql("set transaction read only")
        read_only = db.sql(months)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            with db.conn.transaction():
                db.sql("select * from public.business_metrics('2026-02-01', '2026-03-01')")
    assert read_only == [("2026-02-01", 20, 1), ("2026-03-01", 0, 0)]
    assert db.one("select count(*) from smsao.business_month_marks") > 0
    assert db.sql(months) == read_only
    assert db.one("select count(*) from smsao.business_month_marks") == 0


def test_only_the_same_users_first_time_waits_for_another_writer(db):
    """Recording a milestone is an upsert: two open transactions recording the same user's
    first SMS serialise (the second waits for the first to end); any other writer does not."""
    me, other = db.create_user(), db.create_user()
    add = "insert into public.sms_logs (user_id, recipient) values (%s, '+244900000000')"
    first, second = db.connect(), db.connect()
    try:
        first.autocommit = second.autocommit = False
        first.execute(add, [me])
        second.execute("set local lock_timeout = '300ms'")
        second.execute(add, [other])                 # another user's first SMS: no wait
        second.execute(add, [db.create_user()])
        with pytest.raises(psycopg.errors.LockNotAvailable):
            second.execute(add, [me])                # the same user's first time: waits
        second.rollback()
        first.commit()
        second.execute("set local lock_timeout = '300ms'")
        second.execute(add, [me])                    # not a first time any more: no wait
        second.commit()
    finally:
        first.close()
        second.close()
    assert db.one("select count(*) from smsao.user_milestones where milestone = 'sent_sms' and user_id = %s", [me]) == 1
