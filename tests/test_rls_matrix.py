"""Every table x every caller: who may select, insert, update, delete which rows.

The expected rights are those of sql/policies/*.sql (grants + RLS). Each table gets one
row owned by `owner` (or an owner-less row for configuration and monitoring tables);
each caller then tries, in a transaction that is rolled back afterwards, to
  select  that row,
  insert  a new row for `owner`,
  update  that row,
  delete  that row.
Outcome codes, in the order s i u d:
  y  allowed (the row is seen / inserted / changed / gone)
  0  hidden: no error, but 0 rows (RLS filtered the row out; it is unchanged)
  x  refused with SQLSTATE 42501 (no privilege, or a row RLS rejects); nothing changed
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Callable

import psycopg
import pytest
from psycopg import sql

from support import ANON, SERVICE, Caller, begin_request

CALLERS = ("anon", "owner", "other", "admin", "service")
OPS = ("select", "insert", "update", "delete")


@dataclass
class Ctx:
    db: object
    owner: uuid.UUID
    other: uuid.UUID
    admin: uuid.UUID

    def insert(self, table: str, values: dict, pk: str) -> object:
        """Insert as the superuser, returning the primary key."""
        q = sql.SQL("insert into {} ({}) values ({}) returning {}").format(
            sql.Identifier("public", table), sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() * len(values)), sql.Identifier(pk))
        return self.db.one(q, list(values.values()))


@dataclass
class Spec:
    table: str
    pk: str
    row: Callable[[Ctx], dict]      # values of the owner's row, inserted by the superuser
    new: Callable[[Ctx], dict]      # values a caller tries to insert (for the owner)
    update: str                     # SET clause a caller tries on the owner's row
    rights: dict[str, str]          # caller -> 4 outcome codes (s i u d)
    existing: Callable[[Ctx], object] | None = None  # pk of a row that already exists

    def __str__(self) -> str:
        return self.table


def phone(n: int) -> str:
    return f"+24492{n:07d}"


def fresh_auth_user_without_profile(c: Ctx) -> dict:
    uid = uuid.uuid4()
    c.db.sql("insert into auth.users (id, email) values (%s, 'p@test.ao')", [uid])
    c.db.sql("delete from public.profiles where user_id = %s", [uid])
    return {"user_id": uid}


NOBODY = "xxxx"  # anon: no privilege on any table
AUDIT = {"anon": NOBODY, "owner": "0xxx", "other": "0xxx", "admin": "yxxx", "service": "yyxx"}
MONITORING = {"anon": NOBODY, "owner": "0xxx", "other": "0xxx", "admin": "yxxx", "service": "yyyy"}
OWNER_ONLY_READ = {"anon": NOBODY, "owner": "yxxx", "other": "0xxx", "admin": "yxxx", "service": "yyyy"}

SPECS = [
    Spec("profiles", "user_id",
         row=None, existing=lambda c: c.owner,
         new=fresh_auth_user_without_profile,
         update="full_name = 'changed'",
         # Users update their own name/phone (column grants); nobody but the backend inserts or deletes.
         rights={"anon": NOBODY, "owner": "yxyx", "other": "0x0x", "admin": "0x0x", "service": "yyyy"}),
    Spec("user_roles", "id",
         row=None, existing=lambda c: c.db.one(
             "select id from public.user_roles where user_id = %s and role = 'user'", [c.owner]),
         new=lambda c: {"user_id": c.owner, "role": "admin"},
         update="role = 'admin'",
         rights=OWNER_ONLY_READ),
    Spec("sms_configurations", "id",
         row=lambda c: {"gateway_name": "g1", "sender_id": "SMSAO", "is_active": True},
         new=lambda c: {"gateway_name": "g2", "sender_id": "SMSAO"},
         update="sender_id = 'changed'",
         rights={"anon": NOBODY, "owner": "0x00", "other": "0x00", "admin": "yyyy", "service": "yyyy"}),
    Spec("credit_requests", "id",
         row=lambda c: {"user_id": c.owner, "amount": 10},
         new=lambda c: {"user_id": c.owner, "amount": 20},
         update="reason = 'changed'",
         rights=OWNER_ONLY_READ),
    Spec("credit_transactions", "id",
         row=lambda c: {"user_id": c.owner, "amount": 10},
         new=lambda c: {"user_id": c.owner, "amount": 5},
         update="kind = 'refund'",
         # The ledger is append-only, for the backend too.
         rights={**OWNER_ONLY_READ, "service": "yyxx"}),
    Spec("contacts", "id",
         row=lambda c: {"user_id": c.owner, "name": "A", "phone": phone(1)},
         new=lambda c: {"user_id": c.owner, "name": "B", "phone": phone(2)},
         update="name = 'changed'",
         rights={"anon": NOBODY, "owner": "yyyy", "other": "0x00", "admin": "0x00", "service": "yyyy"}),
    Spec("campaigns", "id",
         row=lambda c: {"user_id": c.owner, "name": "C1"},
         new=lambda c: {"user_id": c.owner, "name": "C2"},
         update="name = 'changed'",
         rights={"anon": NOBODY, "owner": "yyyy", "other": "0x00", "admin": "yx00", "service": "yyyy"}),
    Spec("sms_logs", "id",
         row=lambda c: {"user_id": c.owner, "recipient": phone(1), "message": "hi"},
         new=lambda c: {"user_id": c.owner, "recipient": phone(2), "message": "hi"},
         update="status = 'failed'",
         rights=OWNER_ONLY_READ),
    Spec("otp_codes", "id",
         row=lambda c: {"user_id": c.owner, "phone": phone(1), "code_hash": "h1"},
         new=lambda c: {"user_id": c.owner, "phone": phone(1), "code_hash": "h2"},
         update="attempts = attempts + 1",
         rights={"anon": NOBODY, "owner": NOBODY, "other": NOBODY, "admin": NOBODY, "service": "yyyy"}),
    Spec("contact_import_jobs", "id",
         row=lambda c: {"user_id": c.owner, "file_name": "a.csv"},
         new=lambda c: {"user_id": c.owner, "file_name": "b.csv"},
         update="status = 'processing'",
         # Users queue their own (pending) imports; the backend moves them on.
         rights={**OWNER_ONLY_READ, "owner": "yyxx"}),
    Spec("credit_prices", "id",
         row=lambda c: {"valid_from": "2026-01-01T00:00:00Z", "price_per_credit": 10},
         new=lambda c: {"valid_from": "2026-02-01T00:00:00Z", "price_per_credit": 12},
         update="price_per_credit = 11",
         # Admins maintain prices (audited by a trigger); the backend reads them.
         rights={"anon": NOBODY, "owner": "0x00", "other": "0x00", "admin": "yyyy", "service": "yxxx"}),
    Spec("acquisition_spend", "id",
         row=lambda c: {"month": "2026-01-01", "channel": "facebook", "amount": 100},
         new=lambda c: {"month": "2026-01-01", "channel": "google", "amount": 50},
         update="amount = 99",
         rights={"anon": NOBODY, "owner": "0x00", "other": "0x00", "admin": "yyyy", "service": "yxxx"}),
    Spec("business_events", "id",
         row=lambda c: {"user_id": c.owner, "event_name": "opened_app"},
         new=lambda c: {"user_id": c.owner, "event_name": "clicked_buy"},
         update="event_name = 'changed'",
         # Users read their own events (written by track_event); admins read aggregates only.
         rights={"anon": NOBODY, "owner": "yxxx", "other": "0xxx", "admin": "0xxx", "service": "yyxx"}),
    Spec("admin_audit_logs", "id",
         row=lambda c: {"admin_id": c.admin, "action": "approve", "target_table": "profiles", "target_id": str(c.owner)},
         new=lambda c: {"admin_id": c.admin, "action": "reject"},
         update="action = 'changed'",
         rights=AUDIT),
    Spec("pii_access_audit", "id",
         row=lambda c: {"accessor_id": c.admin, "subject_user_id": c.owner, "table_name": "profiles"},
         new=lambda c: {"accessor_id": c.admin, "subject_user_id": c.owner, "table_name": "contacts"},
         update="purpose = 'changed'",
         rights=AUDIT),
    Spec("function_call_audit", "id",
         row=lambda c: {"caller_id": c.owner, "function_name": "request_credits", "outcome": "ok"},
         new=lambda c: {"caller_id": c.owner, "function_name": "request_credits", "outcome": "denied"},
         update="outcome = 'error'",
         rights=AUDIT),
    Spec("system_health_snapshots", "id",
         row=lambda c: {"system_status": "healthy"},
         new=lambda c: {"system_status": "warning"},
         update="system_status = 'critical'",
         rights=MONITORING),
    Spec("system_alerts", "id",
         row=lambda c: {"severity": "warning", "message": "m"},
         new=lambda c: {"severity": "critical", "message": "m"},
         update="acknowledged_at = now()",
         # Admins acknowledge alerts (a column grant + policy); nothing else changes.
         rights={**MONITORING, "owner": "0x0x", "other": "0x0x", "admin": "yxyx"}),
    Spec("performance_samples", "id",
         row=lambda c: {"response_time_ms": 1.5},
         new=lambda c: {"response_time_ms": 2.5},
         update="response_time_ms = 99",
         rights=MONITORING),
]


def callers(c: Ctx) -> dict[str, Caller]:
    return {"anon": ANON, "owner": Caller.user(c.owner), "other": Caller.user(c.other),
            "admin": Caller.user(c.admin), "service": SERVICE}


def as_caller(db, caller: Caller, query, params) -> tuple[int | None, str | None]:
    """Run one statement as `caller` in a savepoint: (rowcount, None) or (None, sqlstate).
    Afterwards the connection is the superuser again."""
    try:
        with db.conn.transaction():
            begin_request(db.conn, caller)
            n = db.conn.execute(query, params).rowcount
            db.conn.execute("reset role")
        return n, None
    except psycopg.Error as exc:
        return None, exc.sqlstate


def snapshot(db, spec: Spec, pk) -> tuple[str | None, int]:
    t = sql.Identifier("public", spec.table)
    row = db.one(sql.SQL("select to_jsonb(t)::text from {} t where {} = %s").format(t, sql.Identifier(spec.pk)), [pk])
    return row, db.one(sql.SQL("select count(*) from {}").format(t))


def outcome(spec: Spec, op: str, n: int | None, state: str | None, before, after, problems: list[str]) -> str:
    """The outcome code, checking that the database state agrees with it."""
    if state is not None:
        if state != "42501":
            problems.append(f"{op}: unexpected SQLSTATE {state}")
        if after != before:
            problems.append(f"{op}: refused, yet the table changed")
        return "x"
    if op == "select":
        return {1: "y", 0: "0"}.get(n, f"?{n}")
    if op == "insert":
        if n != 1 or after[1] != before[1] + 1:
            problems.append(f"{op}: reported {n} rows, count {before[1]} -> {after[1]}")
        return "y"
    if n == 0:
        if after != before:
            problems.append(f"{op}: 0 rows, yet the table changed")
        return "0"
    gone = after[0] is None and after[1] == before[1] - 1
    changed = after[0] is not None and after[0] != before[0] and after[1] == before[1]
    if n != 1 or not (gone if op == "delete" else changed):
        problems.append(f"{op}: reported {n} rows, row {before} -> {after}")
    return "y"


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_rights(any_db, spec: Spec):
    c = Ctx(any_db, owner=any_db.create_user(), other=any_db.create_user(), admin=any_db.create_user(admin=True))
    pk = spec.existing(c) if spec.existing else c.insert(spec.table, spec.row(c), spec.pk)
    table, key = sql.Identifier("public", spec.table), sql.Identifier(spec.pk)
    statements = {
        "select": (sql.SQL("select {} from {} where {} = %s").format(key, table, key), lambda: [pk]),
        "update": (sql.SQL("update {} set " + spec.update + " where {} = %s").format(table, key), lambda: [pk]),
        "delete": (sql.SQL("delete from {} where {} = %s").format(table, key), lambda: [pk]),
    }
    actual, problems = {}, []
    for name, caller in callers(c).items():
        codes = ""
        for op in OPS:
            with any_db.conn.transaction(force_rollback=True):
                if op == "insert":
                    values = spec.new(c)  # may prepare rows as the superuser first
                    query = sql.SQL("insert into {} ({}) values ({})").format(
                        table, sql.SQL(", ").join(map(sql.Identifier, values)),
                        sql.SQL(", ").join(sql.Placeholder() * len(values)))
                    params = list(values.values())
                else:
                    query, params = statements[op][0], statements[op][1]()
                before = snapshot(any_db, spec, pk)
                n, state = as_caller(any_db, caller, query, params)
                after = snapshot(any_db, spec, pk)
                found: list[str] = []
                codes += outcome(spec, op, n, state, before, after, found)
                problems += [f"{name} {p}" for p in found]
        actual[name] = codes
    assert not problems, "\n".join(problems)
    assert actual == spec.rights, (
        f"{spec.table}: rights (s i u d) differ\n" + "\n".join(
            f"  {n:8} expected {spec.rights[n]} got {actual[n]}" + ("" if actual[n] == spec.rights[n] else "  <--")
            for n in CALLERS))


def public_tables(db) -> dict[str, bool]:
    return dict(db.sql("select relname, relrowsecurity from pg_class"
                       " where relnamespace = 'public'::regnamespace and relkind in ('r', 'p')"))


def test_every_public_table_has_rls(any_db):
    missing = sorted(t for t, rls in public_tables(any_db).items() if not rls)
    assert not missing, f"tables in public without row level security: {missing}"


def test_internal_tables_have_rls_and_no_app_privileges(any_db):
    """smsao holds state only the owner's functions touch: RLS without policies and no
    privilege for the app roles, so a mistaken grant still exposes nothing."""
    rows = any_db.sql("""select c.relname, c.relrowsecurity,
                             has_table_privilege('anon', c.oid, 'select, insert, update, delete')
                          or has_table_privilege('authenticated', c.oid, 'select, insert, update, delete')
                          or has_table_privilege('service_role', c.oid, 'select, insert, update, delete')
                      from pg_class c where c.relnamespace = 'smsao'::regnamespace and c.relkind = 'r'""")
    assert rows
    assert [r[0] for r in rows if not r[1] or r[2]] == []


def test_every_public_table_is_in_the_matrix(db):
    # Partitions of the audit tables are reached through their parent only (their own rules:
    # tests/test_audit_partitions.py).
    partitions = {r[0] for r in db.sql("select relname from pg_class where relispartition "
                                       "and relnamespace = 'public'::regnamespace")}
    assert partitions
    assert sorted(set(public_tables(db)) - partitions) == sorted(s.table for s in SPECS), \
        "a table in public needs RLS, grants in sql/policies/ and a row in this matrix"


def test_anon_holds_no_privilege_in_public(any_db):
    """Not even on sequences or functions it is not meant to call."""
    tables = any_db.sql("select c.oid::regclass::text from pg_class c where c.relnamespace = 'public'::regnamespace"
                    " and c.relkind in ('r', 'p', 'v', 'm', 'S')"
                    " and (has_table_privilege('anon', c.oid, 'select, insert, update, delete, truncate, references, trigger')"
                    "      or (c.relkind = 'S' and has_sequence_privilege('anon', c.oid, 'usage, select, update')))")
    assert tables == []


def test_policies_evaluate_caller_once_per_query(db):
    """`(select auth.uid())` is an initplan, evaluated once; a bare `auth.uid()` runs per row."""
    bare = []
    for name, table, expr in db.sql("select policyname, tablename, concat_ws(' / ', qual, with_check)"
                                    " from pg_policies where schemaname = 'public'"):
        for call in re.finditer(r"(auth\.uid|smsao\.is_admin|smsao\.is_active_user|auth\.jwt|auth\.role)\(\)", expr):
            if not re.search(r"SELECT\s+$", expr[:call.start()]):
                bare.append(f"{table}.{name}: {expr}")
    assert not bare, "\n".join(bare)


def test_suspended_admin_loses_admin_reads(db):
    """is_admin() requires an active account: a suspended admin is an ordinary user."""
    owner = db.create_user()
    admin = db.create_user(admin=True, status="suspended")
    db.sql("insert into public.campaigns (user_id, name) values (%s, 'c')", [owner])
    assert db.as_(Caller.user(admin), "select count(*) from public.campaigns") == [(0,)]
    assert db.as_(Caller.user(admin), "select user_id from public.profiles") == [(admin,)]


# CONTRACT section 3 (and the internal helpers that policies and triggers call with the
# caller's rights): exactly who may EXECUTE what. Everything else in public and smsao is
# executable by none of the app roles, whatever Supabase's default privileges granted.
APP = {"anon", "authenticated", "service_role"}
OPERATORS = {"authenticated", "service_role"}
EXECUTE_GRANTS = {
    "public.enhanced_security_rate_limit(text,integer,integer)": APP,
    "public.validate_user_session()": APP,
    "public.has_role(uuid,app_role)": OPERATORS,
    "public.request_credits(integer)": {"authenticated"},
    "public.approve_credit_request(uuid)": OPERATORS,
    "public.reject_credit_request(uuid,text)": OPERATORS,
    "public.admin_set_user_status(uuid,text)": OPERATORS,
    "public.admin_get_user_details(uuid)": OPERATORS,
    "public.admin_list_users(integer,integer)": OPERATORS,
    "public.production_system_health_check()": OPERATORS,
    "public.production_data_cleanup()": OPERATORS,
    "public.production_data_cleanup_report()": OPERATORS,
    "public.record_health_snapshot()": {"service_role"},
    "public.record_performance_sample()": {"service_role"},
    # The dashboard's readers of the critical operations' figures (a service_role login).
    "smsao.dashboard_call_totals()": {"service_role"},
    "smsao.dashboard_calls_since(timestamp with time zone)": {"service_role"},
    "smsao.dashboard_calls_per_hour(integer)": {"service_role"},
    "public.track_event(text,jsonb)": {"authenticated"},
    "public.business_metrics(date,date)": OPERATORS,
    "public.conversion_funnel(text[],timestamp with time zone,timestamp with time zone,interval)": OPERATORS,
    "public.retention_cohorts(date,date)": OPERATORS,
    "public.set_ga4_export(text,boolean)": OPERATORS,
    "public.analytics_live_figures()": OPERATORS,
    # Called by RLS policies and triggers with the caller's rights.
    "smsao.caller_role()": APP,
    "smsao.caller_id()": APP,
    "smsao.is_admin()": OPERATORS,
    "smsao.is_active_user()": {"authenticated"},
    "smsao.guard_app_statement(text,text,text)": {"anon", "authenticated"},
    "smsao.send_cache_invalidation(uuid[],text[])": OPERATORS,
}


def test_execute_grants_are_exactly_the_contracts(any_db):
    rows = any_db.sql("""
        select p.oid::regprocedure::text, r.rolname
        from pg_proc p cross join pg_roles r
        where p.pronamespace in ('public'::regnamespace, 'smsao'::regnamespace)
          and r.rolname in ('anon', 'authenticated', 'service_role')
          and has_function_privilege(r.oid, p.oid, 'execute')""")
    actual: dict[str, set] = {}
    for function, role in rows:
        qualified = function if "." in function.split("(")[0] else "public." + function
        actual.setdefault(qualified, set()).add(role)
    assert actual == EXECUTE_GRANTS


def test_no_function_or_sequence_is_granted_to_public(any_db):
    assert any_db.sql("""
        select p.oid::regprocedure::text from pg_proc p
        where p.pronamespace in ('public'::regnamespace, 'smsao'::regnamespace)
          and (p.proacl is null or exists (select from aclexplode(p.proacl) a where a.grantee = 0))""") == []
    assert any_db.sql("""
        select c.oid::regclass::text from pg_class c
        where c.relkind = 'S' and c.relnamespace in ('public'::regnamespace, 'smsao'::regnamespace)
          and (has_sequence_privilege('authenticated', c.oid, 'usage, select, update')
               or has_sequence_privilege('anon', c.oid, 'usage, select, update')
               or has_sequence_privilege('service_role', c.oid, 'usage, select, update'))""") == []
