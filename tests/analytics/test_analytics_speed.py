"""Revision 0012_analytics_speed keeps CONTRACT section 7 exact: a custom funnel step answered
from each user's first occurrence (smsao.event_firsts) falls back to the events whenever that
first occurrence is before the user's previous step (or only a lower bound, after a deletion),
and the sent_sms milestone of a bulk statement of many users is exact for new senders,
earlier-dated rows and senders who had sent before alike."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

from analytics_support import Recount, add_user
from runner.recovery import integrity
from support import SERVICE

MARCH, APRIL = datetime(2026, 3, 1, tzinfo=timezone.utc), datetime(2026, 4, 1, tzinfo=timezone.utc)
FUNNEL = ["signed_up", "opened_app", "requested_credits"]


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=timezone.utc)


def event(db, user, day: str, name: str = "opened_app") -> None:
    db.sql("insert into public.business_events (user_id, event_name, occurred_at) values (%s, %s, %s)",
           [user, name, at(day)])


def funnel(db, steps=FUNNEL, since=MARCH, until=APRIL, within=timedelta(days=30)) -> list[tuple]:
    got = db.as_(SERVICE, "select * from public.conversion_funnel(%s, %s, %s, %s)", [steps, since, until, within])
    assert got == Recount(db.conn).funnel(steps, since, until, within)
    return [row[2] for row in got]


def firsts(db, user) -> list[tuple]:
    return db.sql("select first_at, exact from smsao.event_firsts where user_id = %s and event_name = 'opened_app'",
                  [user])


def test_a_first_occurrence_before_the_previous_step_falls_back_to_the_events(db):
    users = {k: add_user(db.conn, at("2026-03-05")) for k in "ABCDEFG"}
    event(db, users["A"], "2026-03-01")            # first before signing up ...
    event(db, users["A"], "2026-03-10")            # ... a later one after: reached, at 03-10
    db.sql("insert into public.credit_requests (user_id, amount, created_at) values (%s, 5, %s)",
           [users["A"], at("2026-03-12")])         # after 03-10: step 3 too
    event(db, users["B"], "2026-03-01")            # only before signing up: not reached
    event(db, users["C"], "2026-03-06")            # first after signing up: reached at 03-06 ...
    db.sql("insert into public.credit_requests (user_id, amount, created_at) values (%s, 5, %s)",
           [users["C"], at("2026-03-05 12:00")])   # ... but requested before that: not step 3
    event(db, users["D"], "2026-01-10")            # first before the funnel's range, then in it
    event(db, users["D"], "2026-03-20")
    event(db, users["E"], "2026-02-20")            # before the range only
    event(db, users["F"], "2026-04-10")            # first after signup + 30 days
    event(db, users["G"], "2026-03-05")            # at the very time of the signup: at or after
    assert funnel(db) == [7, 4, 1]
    assert funnel(db, ["opened_app", "opened_app"]) == [5, 5]
    # A range that starts after D's first: D's step 1 is its first occurrence in the range.
    assert funnel(db, ["opened_app", "signed_up"], since=at("2026-03-02")) == [4, 1]
    assert funnel(db, ["signed_up", "opened_app"], within=timedelta(days=5)) == [7, 3]


def test_a_deleted_first_occurrence_leaves_a_lower_bound_and_the_funnel_exact(db):
    me = add_user(db.conn, at("2026-03-05"))
    event(db, me, "2026-03-06")
    event(db, me, "2026-03-20")
    assert firsts(db, me) == [(at("2026-03-06"), True)] and funnel(db) == [1, 1, 0]
    db.sql("delete from public.business_events where occurred_at = %s", [at("2026-03-06")])
    assert firsts(db, me) == [(at("2026-03-06"), False)] and funnel(db) == [1, 1, 0]
    db.sql("delete from public.business_events where occurred_at = %s", [at("2026-03-20")])
    assert firsts(db, me) == [(at("2026-03-06"), False)] and funnel(db) == [1, 0, 0]
    # An occurrence under the lower bound is the first for sure: exact again.
    event(db, me, "2026-03-02")
    assert firsts(db, me) == [(at("2026-03-02"), True)] and funnel(db) == [1, 0, 0]
    # A correction moves it: the old time is no longer known to be the first.
    db.sql("update public.business_events set occurred_at = %s where user_id = %s", [at("2026-03-07"), me])
    assert firsts(db, me) == [(at("2026-03-02"), False)] and funnel(db) == [1, 1, 0]
    assert integrity_failures(db) == {}
    days = dict(((d, e), n) for d, e, n in db.sql(
        "select day, event_name, sum(events)::int from smsao.event_counts group by 1, 2 having sum(events) <> 0"))
    assert days == Recount(db.conn).event_days()
    db.sql("truncate public.business_events")
    assert firsts(db, me) == [] and funnel(db) == [1, 0, 0]
    assert db.one("select count(*) from smsao.event_counts where event_name = 'opened_app' and events <> 0") == 0


def test_a_stale_first_occurrence_is_named_and_rebuilt(db):
    me = add_user(db.conn, at("2026-03-05"))
    with db.connect() as conn:                     # an event written past the triggers
        conn.execute("set session_replication_role = replica")
        conn.execute("insert into public.business_events (user_id, event_name, occurred_at)"
                     " values (%s, 'opened_app', '2026-03-06')", [me])
    broken = integrity_failures(db)
    assert "analytics_event_firsts" in broken and "stored nothing" in broken["analytics_event_firsts"]
    db.sql("select smsao.rebuild_analytics()")
    assert integrity_failures(db) == {} and firsts(db, me) == [(at("2026-03-06"), True)]


def integrity_failures(db) -> dict[str, str]:
    return {r.name: r.detail for r in integrity.run(db.url) if not r.passed and r.name.startswith("analytics_")}


def test_a_bulk_sms_statement_of_many_users_records_exactly_their_first_sms(db):
    """1,500 users in one statement (past the trigger's single pass threshold): senders from
    before keep their first time, an earlier-dated row moves it, new senders get theirs."""
    old, later, new = ([uuid.uuid4() for _ in range(n)] for n in (1000, 200, 300))
    send = ("insert into public.sms_logs (user_id, recipient, created_at)"
            " select u, '+244900000001', %s::timestamptz + i * interval '1 second'"
            " from unnest(%s::uuid[]) with ordinality x(u, i)")
    db.sql(send, [at("2026-01-01"), old])
    db.sql(send, [at("2026-03-01"), later])
    db.sql(send, [at("2026-02-01"), old + later + new])
    recount = Recount(db.conn)
    stored = dict(db.sql("select user_id, first_at from smsao.user_milestones where milestone = 'sent_sms'"))
    assert stored == recount.milestones["sent_sms"] and len(stored) == 1500
    assert stored[later[0]] == at("2026-02-01") + timedelta(seconds=1001)
    assert stored[new[0]] == at("2026-02-01") + timedelta(seconds=1201)
    assert stored[old[0]] == at("2026-01-01") + timedelta(seconds=1)
    # Everyone has sent before: the statement records nothing.
    db.sql(send, [at("2026-05-01"), old + later + new])
    assert dict(db.sql("select user_id, first_at from smsao.user_milestones where milestone = 'sent_sms'")) == stored
    days = dict(((d, e), n) for d, e, n in db.sql(
        "select day, event_name, sum(events)::int from smsao.event_counts group by 1, 2 having sum(events) <> 0"))
    assert days == Recount(db.conn).event_days()


def test_one_sms_statement_mixing_orphans_new_and_old_senders_keeps_counters_and_milestones(db):
    """The sms_logs insert counter groups the statement's rows once for the orphan counters and
    sent_sms (revision 0012): owners with and without a profile, who sent before or never, in
    one statement of many users (the single pass) and one of few (a probe each)."""
    def users(n: int, with_profile: bool) -> list[uuid.UUID]:
        ids = [uuid.uuid4() for _ in range(n)]
        if with_profile:  # the signup trigger writes each profile
            db.sql("insert into auth.users (id, email) select u, u || '@t.ao' from unnest(%s::uuid[]) u", [ids])
        return ids

    old, new, orphan_old, orphan_new = users(600, True), users(400, True), users(100, False), users(200, False)
    send = ("insert into public.sms_logs (user_id, recipient, status, created_at)"
            " select u, '+244900000001', case when i %% 7 = 0 then 'failed' else 'sent' end,"
            " %s::timestamptz + i * interval '1 second' from unnest(%s::uuid[]) with ordinality x(u, i)")
    db.sql(send, [at("2026-01-01"), old + orphan_old])
    # Many users, two rows for some of them (the earliest counts), old senders' rows dated later.
    db.sql(send, [at("2026-02-01"), old + new + orphan_old + orphan_new + new[:50] + orphan_new[:50]])
    # Few users: one of each kind, one old sender's row dated before their first.
    db.sql(send, [at("2025-12-01"), [old[0], uuid.uuid4(), orphan_old[0], users(1, True)[0]]])

    stored = dict(db.sql("select user_id, first_at from smsao.user_milestones where milestone = 'sent_sms'"))
    recount = Recount(db.conn)
    assert stored == recount.milestones["sent_sms"] and len(stored) == 1302
    assert stored[old[0]] == at("2025-12-01") + timedelta(seconds=1)
    assert stored[old[1]] == at("2026-01-01") + timedelta(seconds=2)
    assert stored[new[0]] == at("2026-02-01") + timedelta(seconds=601)
    assert stored[orphan_new[0]] == at("2026-02-01") + timedelta(seconds=1101)
    days = dict(((d, e), n) for d, e, n in db.sql(
        "select day, event_name, sum(events)::int from smsao.event_counts group by 1, 2 having sum(events) <> 0"))
    assert days == Recount(db.conn).event_days()
    orphans = db.one("select sum(value) from smsao.health_counters where metric = 'orphaned_sms_logs'")
    assert orphans == 2 * 100 + 1 + 200 + 50 + 1  # rows of the 302 owners without a profile
    failures = {r.name: r.detail for r in integrity.run(db.url)
                if not r.passed and r.name.startswith(("counter_", "analytics_"))}
    assert failures == {}
