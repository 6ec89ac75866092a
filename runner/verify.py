"""`smsao-db verify`: assert the contract's behaviour against any database, changing nothing.

Everything runs in ONE transaction that is rolled back at the end; each check runs in its
own savepoint, which is rolled back too, so a failing check leaves the others untouched.
Checks seed what they need (users, rows, sessions) and act as the app's roles exactly as
PostgREST does (`set local role` + `request.jwt.claims`). They look only at the rows they
seeded, so the data already in the database does not sway a result. The retention cleanup
does delete real old rows inside the transaction: the rollback brings them back.

Needs a connection that may `set role` to anon, authenticated and service_role (a superuser,
Supabase's `postgres`, or the schema owner with those memberships).
"""
from __future__ import annotations

import re
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Callable

import psycopg
from psycopg import sql

from runner.db import connect
from runner.errors import UserError
from runner.request import ANON, SERVICE, Caller, begin_request

APP_ROLES = ("anon", "authenticated", "service_role")

# CONTRACT section 2: every table, and the ones whose rows belong to a user (column user_id).
CONTRACT_TABLES = (
    "profiles", "user_roles", "sms_configurations", "credit_requests", "credit_transactions",
    "contacts", "campaigns", "sms_logs", "otp_codes", "contact_import_jobs", "admin_audit_logs",
    "pii_access_audit", "function_call_audit", "system_health_snapshots", "system_alerts",
    "performance_samples",
)
USER_OWNED = ("profiles", "user_roles", "credit_requests", "credit_transactions", "contacts",
              "campaigns", "sms_logs", "contact_import_jobs")
ADMIN_ONLY = ("admin_audit_logs", "pii_access_audit", "function_call_audit",
              "system_health_snapshots", "system_alerts", "performance_samples")
AUDIT_TABLES = ("admin_audit_logs", "pii_access_audit", "function_call_audit")

# CONTRACT section 3: who may EXECUTE each function, among the app's roles. Admins are
# `authenticated` callers the function itself checks.
ADMINS_AND_SERVICE = frozenset({"authenticated", "service_role"})
CONTRACT_GRANTS = {
    "public.production_system_health_check()": ADMINS_AND_SERVICE,
    "public.production_data_cleanup()": ADMINS_AND_SERVICE,
    "public.enhanced_security_rate_limit(text,integer,integer)": frozenset(APP_ROLES),
    "public.validate_user_session()": frozenset(APP_ROLES),
    "public.has_role(uuid,public.app_role)": ADMINS_AND_SERVICE,
    "public.request_credits(integer)": frozenset({"authenticated"}),
    "public.approve_credit_request(uuid)": ADMINS_AND_SERVICE,
    "public.reject_credit_request(uuid,text)": ADMINS_AND_SERVICE,
    "public.admin_set_user_status(uuid,text)": ADMINS_AND_SERVICE,
    "public.admin_get_user_details(uuid)": ADMINS_AND_SERVICE,
    "public.record_health_snapshot()": frozenset({"service_role"}),
    "public.record_performance_sample()": frozenset({"service_role"}),
}
HEALTH_METRICS = ("total_users", "active_sms_configs", "pending_credit_requests", "failed_sms_24h",
                  "orphaned_data")
# CONTRACT section 3: the engine's and the scheduler's vital signs (NULL where not measurable).
VITAL_SIGNS = ("longest_transaction_s", "connection_usage", "xid_age_ratio", "blocked_sessions",
               "database_size_bytes", "health_snapshot_age_s", "cron_failures_1h", "security_refusals_1h")


class CheckFailed(AssertionError):
    """A check found the database breaking the contract; the message says how."""


def ensure(condition, message: str) -> None:
    if not condition:
        raise CheckFailed(message)




@dataclass
class Result:
    name: str
    area: str
    passed: bool
    detail: str
    seconds: float


@dataclass
class Check:
    name: str
    area: str
    run: Callable[["Verifier"], str | None]


CHECKS: list[Check] = []


def check(area: str, name: str):
    def register(fn):
        CHECKS.append(Check(name, area, fn))
        return fn
    return register


# -- the session every check uses ------------------------------------------------------------
class Verifier:
    """Helpers over the one connection: run as the owner, as an app role, seed users."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def sql(self, query: str, params=None) -> list[tuple]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def one(self, query: str, params=None):
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def as_(self, caller: Caller, query: str, params=None) -> list[tuple]:
        """One request as `caller`; its settings are undone afterwards (on error, by the savepoint)."""
        with self.conn.transaction():
            begin_request(self.conn, caller)
            cur = self.conn.execute(query, params)
            rows = cur.fetchall() if cur.description else []
            self.conn.execute("reset role")
            self.conn.execute("select set_config('request.jwt.claims', '', true), "
                              "set_config('request.headers', '', true)")
            return rows

    def error_of(self, caller: Caller, query: str, params=None) -> str | None:
        """The SQLSTATE `query` raises as `caller`, or None when it succeeds."""
        try:
            self.as_(caller, query, params)
        except psycopg.Error as exc:
            return exc.sqlstate or "error"
        return None

    def new_user(self, *, status: str = "active", admin: bool = False) -> uuid.UUID:
        """A user as the auth service creates one; the profile must come from the trigger."""
        uid = uuid.uuid4()
        self.sql("insert into auth.users (id, email) values (%s, %s)", [uid, f"verify-{uid}@verify.invalid"])
        ensure(self.one("select count(*) from public.profiles where user_id = %s", [uid]) == 1,
               "a new auth.users row got no profile")
        if status != "active":
            self.sql("update public.profiles set status = %s where user_id = %s", [status, uid])
        if admin:
            self.sql("insert into public.user_roles (user_id, role) values (%s, 'admin')", [uid])
        return uid

    def new_session(self, uid: uuid.UUID, not_after_sql: str | None = None) -> uuid.UUID:
        sid = uuid.uuid4()
        self.sql(f"insert into auth.sessions (id, user_id, not_after) values "
                 f"(%s, %s, {not_after_sql or 'null'})", [sid, uid])
        return sid

    def function_exists(self, signature: str) -> bool:
        return self.one("select to_regprocedure(%s) is not null", [signature])


# -- identity ------------------------------------------------------------------------------
@check("identity", "roles anon, authenticated, service_role exist")
def _roles(v: Verifier):
    have = {r for (r,) in v.sql("select rolname from pg_roles where rolname = any(%s)", [list(APP_ROLES)])}
    ensure(have == set(APP_ROLES), f"missing roles: {sorted(set(APP_ROLES) - have)}")


@check("identity", "auth.uid() and auth.role() read the request's claims")
def _identity(v: Verifier):
    uid = uuid.uuid4()
    got = v.as_(Caller.user(uid), "select auth.uid(), auth.role(), auth.jwt() ->> 'sub'")[0]
    ensure(got == (uid, "authenticated", str(uid)), f"as a user got {got}")
    ensure(v.as_(ANON, "select auth.uid()")[0][0] is None, "anon without claims has a uid")
    # After a transaction the settings read as '' (Supabase semantics): absent, not an error.
    v.sql("select set_config('request.jwt.claims', '', true)")
    ensure(v.one("select auth.uid() is null and auth.role() is null") is True,
           "empty claims ('') are not read as absent")


@check("identity", "every new user gets a profile")
def _profiles(v: Verifier):
    v.new_user()  # asserts the profile itself
    return "profile created by the auth.users trigger"


# -- row-level security -----------------------------------------------------------------------
@check("rls", "RLS enabled on every contract table")
def _rls_enabled(v: Verifier):
    rows = dict(v.sql("select c.relname, c.relrowsecurity from pg_class c "
                      "where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') "
                      "and c.relname = any(%s)", [list(CONTRACT_TABLES)]))
    missing = [t for t in CONTRACT_TABLES if t not in rows]
    off = [t for t in CONTRACT_TABLES if rows.get(t) is False]
    ensure(not missing, f"missing tables: {', '.join(missing)}")
    ensure(not off, f"RLS disabled on: {', '.join(off)}")
    return f"{len(CONTRACT_TABLES)} tables"


@check("rls", "policies call (select auth.uid()), evaluated once per query")
def _policy_initplan(v: Verifier):
    bad = []
    for table, policy, expr in v.sql("""
            select tablename, policyname, coalesce(qual, '') || ' ' || coalesce(with_check, '')
              from pg_policies where schemaname = 'public' and tablename = any(%s)""",
                                     [list(CONTRACT_TABLES)]):
        bare = re.sub(r"SELECT\s+auth\.uid\(\)", "", expr, flags=re.I)
        if "auth.uid()" in bare:
            bad.append(f"{table}.{policy}")
    ensure(not bad, f"auth.uid() called per row in: {', '.join(bad)}")


def _seed_rows(v: Verifier, uid: uuid.UUID) -> dict[str, str]:
    """One row owned by `uid` in every user-owned table (listed columns only); table -> id."""
    ids = {"profiles": str(uid)}
    ids["user_roles"] = v.one("insert into public.user_roles (user_id, role) values (%s, 'user') "
                              "on conflict (user_id, role) do update set role = excluded.role returning id::text", [uid])
    ids["credit_requests"] = v.one("insert into public.credit_requests (user_id, amount) values (%s, 10) returning id::text", [uid])
    ids["credit_transactions"] = v.one("insert into public.credit_transactions (user_id, amount) values (%s, 10) returning id::text", [uid])
    ids["contacts"] = v.one("insert into public.contacts (user_id, name, phone) values (%s, 'verify', '+244900000001') returning id::text", [uid])
    ids["campaigns"] = v.one("insert into public.campaigns (user_id, name, message) values (%s, 'verify', 'hi') returning id::text", [uid])
    ids["sms_logs"] = v.one("insert into public.sms_logs (user_id, recipient, message, status) values (%s, '+244900000001', 'hi', 'sent') returning id::text", [uid])
    ids["contact_import_jobs"] = v.one("insert into public.contact_import_jobs (user_id) values (%s) returning id::text", [uid])
    return ids


def _seed_admin_only(v: Verifier) -> dict[str, str]:
    ids = {}
    ids["admin_audit_logs"] = v.one("insert into public.admin_audit_logs (action) values ('verify') returning id::text")
    ids["pii_access_audit"] = v.one("insert into public.pii_access_audit (table_name) values ('verify') returning id::text")
    ids["function_call_audit"] = v.one("insert into public.function_call_audit (function_name, outcome) values ('verify', 'ok') returning id::text")
    ids["system_health_snapshots"] = v.one("insert into public.system_health_snapshots (system_status) values ('healthy') returning id::text")
    ids["system_alerts"] = v.one("insert into public.system_alerts (severity, message) values ('warning', 'verify') returning id::text")
    ids["performance_samples"] = v.one("insert into public.performance_samples (response_time_ms) values (1) returning id::text")
    ids["otp_codes"] = v.one("insert into public.otp_codes (phone, code_hash) values ('+244900000001', 'x') returning id::text")
    ids["sms_configurations"] = v.one("insert into public.sms_configurations (gateway_name, sender_id) values ('verify', 'VERIFY') returning id::text")
    return ids


def _key(table: str) -> str:
    return "user_id" if table == "profiles" else "id"


def _visible(v: Verifier, caller: Caller, table: str, row_id: str) -> bool | str:
    """Whether `caller` can read the row; 'denied' when the table refuses them outright."""
    try:
        return bool(v.as_(caller, sql.SQL("select count(*) from public.{} where {}::text = %s").format(
            sql.Identifier(table), sql.Identifier(_key(table))), [row_id])[0][0])
    except psycopg.errors.InsufficientPrivilege:
        return "denied"


@check("rls", "a user reads their own rows and no one else's")
def _isolation_read(v: Verifier):
    alice, bob = v.new_user(), v.new_user()
    mine, theirs = _seed_rows(v, alice), _seed_rows(v, bob)
    hidden = [t for t in USER_OWNED if _visible(v, Caller.user(alice), t, mine[t]) is not True]
    leaked = [t for t in USER_OWNED if _visible(v, Caller.user(alice), t, theirs[t]) is True]
    ensure(not hidden, f"own rows not visible in: {', '.join(hidden)}")
    ensure(not leaked, f"another user's rows visible in: {', '.join(leaked)}")
    return f"{len(USER_OWNED)} user-owned tables"


@check("rls", "a user cannot write another user's rows")
def _isolation_write(v: Verifier):
    alice, bob = v.new_user(), v.new_user()
    theirs = _seed_rows(v, bob)
    a = Caller.user(alice)
    state = v.error_of(a, "insert into public.contacts (user_id, phone) values (%s, '+244900000002')", [bob])
    ensure(state == "42501", f"inserting a contact for another user: {state or 'accepted'}")
    for table, stmt in (("contacts", "update public.contacts set name = 'hijacked' where id = %s"),
                        ("campaigns", "update public.campaigns set name = 'hijacked' where id = %s"),
                        ("contacts", "delete from public.contacts where id = %s"),
                        ("campaigns", "delete from public.campaigns where id = %s")):
        try:
            v.as_(a, stmt, [uuid.UUID(theirs[table])])
        except psycopg.errors.InsufficientPrivilege:
            pass
        still = v.one(f"select count(*) from public.{table} where id = %s and name = 'verify'",
                      [uuid.UUID(theirs[table])])
        ensure(still == 1, f"{stmt.split()[0]} on another user's {table} row took effect")
    state = v.error_of(a, "update public.profiles set credits = credits + 1000 where user_id = %s", [alice])
    ensure(state == "42501", f"a user raising their own credits: {state or 'accepted'}")
    state = v.error_of(a, "update public.profiles set status = 'active' where user_id = %s", [alice])
    ensure(state == "42501", f"a user setting their own status: {state or 'accepted'}")


@check("rls", "anon reads nothing and writes nothing")
def _anon(v: Verifier):
    owner = v.new_user()
    ids = {**_seed_rows(v, owner), **_seed_admin_only(v)}
    seen = [t for t in CONTRACT_TABLES if _visible(v, ANON, t, ids[t]) is True]
    ensure(not seen, f"anon reads rows of: {', '.join(seen)}")
    for stmt, params in (("insert into public.contacts (user_id, phone) values (%s, '+244900000003')", [owner]),
                         ("insert into public.campaigns (user_id, name) values (%s, 'x')", [owner]),
                         ("update public.profiles set full_name = 'x' where user_id = %s", [owner])):
        try:
            v.as_(ANON, stmt, params)
        except psycopg.Error:
            continue
        ensure(False, f"anon could run: {stmt.split(' (')[0]}")
    ensure(v.one("select full_name is distinct from 'x' from public.profiles where user_id = %s", [owner]),
           "anon changed a profile")
    return f"{len(CONTRACT_TABLES)} tables"


@check("rls", "audit, monitoring and OTP rows: hidden from users, audits readable by admins")
def _admin_only(v: Verifier):
    user, admin = v.new_user(), v.new_user(admin=True)
    ids = _seed_admin_only(v)
    seen = [t for t in (*ADMIN_ONLY, "otp_codes") if _visible(v, Caller.user(user), t, ids[t]) is True]
    ensure(not seen, f"a non-admin user reads: {', '.join(seen)}")
    blind = [t for t in AUDIT_TABLES if _visible(v, Caller.user(admin), t, ids[t]) is not True]
    ensure(not blind, f"an admin cannot read: {', '.join(blind)}")
    blind = [t for t in AUDIT_TABLES if _visible(v, SERVICE, t, ids[t]) is not True]
    ensure(not blind, f"service_role cannot read: {', '.join(blind)}")


@check("rls", "audit trails are append-only for every app role")
def _append_only(v: Verifier):
    ids = _seed_admin_only(v)
    admin = Caller.user(v.new_user(admin=True))
    accepted = []
    for table in AUDIT_TABLES:
        name = sql.Identifier(table)
        for caller in (ANON, admin, SERVICE):
            for verb, stmt in (("update", sql.SQL("update public.{} set created_at = created_at where id = %s")),
                               ("delete", sql.SQL("delete from public.{} where id = %s")),
                               ("truncate", sql.SQL("truncate public.{}"))):
                query = stmt.format(name)
                if v.error_of(caller, query, [int(ids[table])] if verb != "truncate" else None) is None:
                    accepted.append(f"{verb} {table} as {caller.role}")
    ensure(not accepted, "accepted: " + "; ".join(accepted))


# -- functions and grants ----------------------------------------------------------------------
@check("grants", "EXECUTE is not granted to PUBLIC")
def _no_public_execute(v: Verifier):
    rows = v.sql("""
        select format('%%I.%%I(%%s)', p.pronamespace::regnamespace, p.proname,
                      pg_get_function_identity_arguments(p.oid))
          from pg_proc p
         where (p.pronamespace = 'smsao'::regnamespace
                or p.oid = any(%s::regprocedure[])
                or (p.pronamespace = 'public'::regnamespace and p.prosecdef))
           and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass
                           and d.objid = p.oid and d.deptype = 'e')
           and (p.proacl is null
                or exists (select from aclexplode(p.proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE'))
         order by 1""", [[s for s in CONTRACT_GRANTS if v.function_exists(s)]])
    ensure(not rows, f"executable by PUBLIC: {', '.join(r[0] for r in rows)}")


@check("grants", "each contract function is executable by exactly its roles")
def _contract_grants(v: Verifier):
    problems = []
    for signature, expected in CONTRACT_GRANTS.items():
        if not v.function_exists(signature):
            problems.append(f"{signature} is missing")
            continue
        actual = {r for r in APP_ROLES
                  if v.one("select has_function_privilege(%s, %s, 'EXECUTE')", [r, signature])}
        if actual != expected:
            extra, lacking = sorted(actual - expected), sorted(expected - actual)
            problems.append(f"{signature.split('(')[0]}: " + ", ".join(
                [f"+{r}" for r in extra] + [f"-{r}" for r in lacking]))
    ensure(not problems, "; ".join(problems))
    return f"{len(CONTRACT_GRANTS)} functions"


@check("grants", "every contract and internal function pins search_path")
def _search_path(v: Verifier):
    # Functions only: a procedure that commits cannot carry a SET clause (it qualifies names instead).
    rows = v.sql("""
        select format('%%I.%%I(%%s)', p.pronamespace::regnamespace, p.proname,
                      pg_get_function_identity_arguments(p.oid))
          from pg_proc p
         where (p.pronamespace = 'smsao'::regnamespace or p.oid = any(%s::regprocedure[]))
           and p.prokind = 'f'
           and not exists (select from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%%')
         order by 1""", [[s for s in CONTRACT_GRANTS if v.function_exists(s)]])
    ensure(not rows, f"no pinned search_path: {', '.join(r[0] for r in rows)}")


# -- rate limiting -----------------------------------------------------------------------------
def _probe_operation() -> str:
    return f"verify_probe_{uuid.uuid4().hex[:16]}"


@check("rate limit", "admits exactly max_attempts, then refuses and records 'rate_limited' once per window")
def _rate_limit(v: Verifier):
    uid = v.new_user()
    op = _probe_operation()
    user = Caller.user(uid)
    answers = [v.as_(user, "select public.enhanced_security_rate_limit(%s, 3, 1)", [op])[0][0] for _ in range(5)]
    ensure(answers == [True, True, True, False, False], f"answers for max 3: {answers}")
    denied = v.one("select count(*) from public.function_call_audit where caller_id = %s "
                   "and outcome = 'rate_limited' and arguments ->> 'operation_type' = %s", [uid, op])
    ensure(denied == 1, f"{denied} 'rate_limited' audit rows for 2 refusals in one window (expected 1)")
    # The key is (caller, operation): another operation and another user start afresh.
    ensure(v.as_(user, "select public.enhanced_security_rate_limit(%s, 3, 1)", [op + "_b"])[0][0],
           "another operation_type was refused")
    ensure(v.as_(Caller.user(v.new_user()), "select public.enhanced_security_rate_limit(%s, 3, 1)", [op])[0][0],
           "another user was refused")


@check("rate limit", "anon callers are keyed by their x-forwarded-for address")
def _rate_limit_anon(v: Verifier):
    op = _probe_operation()
    first, other = Caller.anon("198.51.100.7"), Caller.anon("198.51.100.8")
    answers = [v.as_(first, "select public.enhanced_security_rate_limit(%s, 2, 1)", [op])[0][0] for _ in range(3)]
    ensure(answers == [True, True, False], f"anon answers for max 2: {answers}")
    ensure(v.as_(other, "select public.enhanced_security_rate_limit(%s, 2, 1)", [op])[0][0],
           "another address was refused")


@check("rate limit", "bad arguments raise 22023")
def _rate_limit_args(v: Verifier):
    user = Caller.user(v.new_user())
    for args in ([None, 5, 15], [_probe_operation(), 0, 15], [_probe_operation(), 5, -1], [_probe_operation(), None, 15]):
        state = v.error_of(user, "select public.enhanced_security_rate_limit(%s, %s, %s)", args)
        ensure(state == "22023", f"enhanced_security_rate_limit{tuple(args)}: {state or 'accepted'}")


# -- sessions -----------------------------------------------------------------------------
@check("session", "validate_user_session() accepts only live sessions of active users")
def _sessions(v: Verifier):
    active, suspended = v.new_user(), v.new_user(status="suspended")
    other = v.new_user()
    live = v.new_session(active, "now() + interval '1 hour'")
    expired = v.new_session(active, "now() - interval '1 second'")
    foreign = v.new_session(other)
    now = int(time.time())
    cases = {
        "service_role": (SERVICE, True),
        "active user": (Caller.user(active), True),
        "active user, live session": (Caller.user(active, session_id=live), True),
        "suspended user": (Caller.user(suspended), False),
        "expired exp": (Caller.user(active, exp=now - 5), False),
        "expired session": (Caller.user(active, session_id=expired), False),
        "another user's session": (Caller.user(active, session_id=foreign), False),
        "unknown user": (Caller.user(uuid.uuid4()), False),
        "anon": (ANON, False),
    }
    wrong = []
    for label, (caller, expected) in cases.items():
        got = v.as_(caller, "select public.validate_user_session()")[0][0]
        if got is not expected:
            wrong.append(f"{label}: {got}")
    ensure(not wrong, "; ".join(wrong))
    return f"{len(cases)} cases"


# -- critical operations and their audits -------------------------------------------------------
@check("audit", "request_credits is audited, gated by session and rate limited")
def _request_credits(v: Verifier):
    uid = v.new_user()
    user = Caller.user(uid)
    rid = v.as_(user, "select public.request_credits(25)")[0][0]
    ensure(v.one("select status from public.credit_requests where id = %s and user_id = %s", [rid, uid]) == "pending",
           "the request was not stored as pending for the caller")
    ensure(v.one("select count(*) from public.function_call_audit where caller_id = %s "
                 "and function_name = 'request_credits' and outcome = 'ok'", [uid]) == 1,
           "no function_call_audit row for request_credits")
    state = v.error_of(Caller.user(v.new_user(status="suspended")), "select public.request_credits(25)")
    ensure(state == "42501", f"a suspended user requesting credits: {state or 'accepted'}")
    state = v.error_of(user, "select public.request_credits(0)")
    ensure(state == "22023", f"request_credits(0): {state or 'accepted'}")
    # The contract's 5 per hour, unless an operator tightened it in smsao.operation_limits.
    limit = 5
    if v.one("select to_regclass('smsao.operation_limits') is not null"):
        limit = v.one("select max_attempts from smsao.operation_limits "
                      "where operation_type = 'financial_transaction'") or limit
    states = [v.error_of(user, "select public.request_credits(25)") for _ in range(limit)]
    expected = [None] * (limit - 1) + ["PT429"]
    ensure(states == expected, f"calls 2-{limit + 1} within the window ({limit} admitted): "
                               f"{[s or 'ok' for s in states]}")


@check("audit", "approving credits adds them once, with ledger row and admin audit")
def _approve(v: Verifier):
    uid, admin = v.new_user(), v.new_user(admin=True)
    rid = v.as_(Caller.user(uid), "select public.request_credits(40)")[0][0]
    state = v.error_of(Caller.user(v.new_user()), "select public.approve_credit_request(%s)", [rid])
    ensure(state == "42501", f"a non-admin approving: {state or 'accepted'}")
    before = v.one("select credits from public.profiles where user_id = %s", [uid])
    v.as_(Caller.user(admin), "select public.approve_credit_request(%s)", [rid])
    after = v.one("select credits from public.profiles where user_id = %s", [uid])
    ensure(after == before + 40, f"credits went from {before} to {after} for 40 approved")
    ensure(v.one("select count(*) from public.credit_transactions where credit_request_id = %s and amount = 40",
                 [rid]) == 1, "no single ledger row for the request")
    ensure(v.one("select count(*) from public.admin_audit_logs where admin_id = %s "
                 "and action = 'approve_credit_request' and target_id = %s", [admin, str(rid)]) == 1,
           "no admin_audit_logs row for the approval")
    state = v.error_of(Caller.user(admin), "select public.approve_credit_request(%s)", [rid])
    ensure(state == "55000", f"approving twice: {state or 'accepted'}")
    ensure(v.one("select credits from public.profiles where user_id = %s", [uid]) == after,
           "a second approval changed the balance")
    ensure(v.one("select sum(amount) from public.credit_transactions where user_id = %s", [uid]) == after,
           "profiles.credits differs from the ledger sum")


@check("audit", "an admin never decides their own credit request")
def _no_self_approval(v: Verifier):
    admin = v.new_user(admin=True)
    rid = v.as_(Caller.user(admin), "select public.request_credits(1000000)")[0][0]
    for sql in ("select public.approve_credit_request(%s)", "select public.reject_credit_request(%s, 'mine')"):
        state = v.error_of(Caller.user(admin), sql, [rid])
        ensure(state == "42501", f"{sql.split('(')[0].split('.')[-1]} of their own request: {state or 'accepted'}")
    ensure(v.one("select status from public.credit_requests where id = %s", [rid]) == "pending",
           "the admin's own request changed")


@check("rls", "a user whose account is not active writes nothing")
def _inactive_writes_nothing(v: Verifier):
    uid = v.new_user(status="suspended")
    user = Caller.user(uid)
    accepted = [sql for sql in (
        "insert into public.campaigns (user_id, name) values (%s, 'verify')",
        "insert into public.contact_import_jobs (user_id) values (%s)",
        "insert into public.contacts (user_id, phone) values (%s, '+244900000009')",
        "update public.profiles set full_name = 'verify' where user_id = %s")
        if v.error_of(user, sql, [uid]) is None]
    ensure(not accepted, "accepted from a suspended user: " + "; ".join(accepted))
    ensure(v.one("select count(*) from public.campaigns where user_id = %s", [uid]) == 0, "a campaign was written")


@check("audit", "reading a user's PII leaves a pii_access_audit row")
def _pii(v: Verifier):
    uid, admin = v.new_user(), v.new_user(admin=True)
    details = v.as_(Caller.user(admin), "select public.admin_get_user_details(%s)", [uid])[0][0]
    ensure(details and "email" in details and "phone" in details, f"details lack email/phone: {details}")
    ensure(v.one("select count(*) from public.pii_access_audit where accessor_id = %s and subject_user_id = %s",
                 [admin, uid]) == 1, "no pii_access_audit row")
    state = v.error_of(Caller.user(v.new_user()), "select public.admin_get_user_details(%s)", [uid])
    ensure(state == "42501", f"a non-admin reading details: {state or 'accepted'}")


# -- monitoring ------------------------------------------------------------------------------
def _health(v: Verifier, caller: Caller = SERVICE) -> dict:
    return v.as_(caller, "select public.production_system_health_check()")[0][0]


@check("health", "health check shape, roles and live values")
def _health_shape(v: Verifier):
    ensure(_health(v, Caller.user(v.new_user(admin=True)))["system_status"], "an admin cannot run it")
    for label, caller in (("a user", Caller.user(v.new_user())), ("anon", ANON)):
        state = v.error_of(caller, "select public.production_system_health_check()")
        ensure(state == "42501", f"{label} running the health check: {state or 'accepted'}")
    report = _health(v)
    ensure(isinstance(report, dict), f"not a JSON object: {report!r}")
    ensure({"timestamp", "system_status", "metrics", "recommendations"} <= report.keys(),
           f"keys: {sorted(report)}")
    ensure(report["system_status"] in ("healthy", "warning", "critical"), f"status {report['system_status']!r}")
    metrics = report["metrics"]
    bad = [m for m in HEALTH_METRICS if not isinstance(metrics.get(m), int) or metrics[m] < 0]
    ensure(not bad, f"metrics missing or not counts: {bad}")
    ensure(isinstance(report["recommendations"], list)
           and all(isinstance(r, str) for r in report["recommendations"]), "recommendations not a list of codes")
    # Live values: seeded rows move the counters at once, in this very transaction.
    uid = v.new_user()
    v.sql("insert into public.credit_requests (user_id, amount) values (%s, 5)", [uid])
    v.sql("insert into public.sms_logs (user_id, recipient, status) values (%s, '+244900000001', 'failed')", [uid])
    v.sql("insert into public.sms_logs (user_id, recipient) values (%s, '+244900000001')", [uuid.uuid4()])
    after = _health(v)["metrics"]
    deltas = {m: after[m] - metrics[m] for m in HEALTH_METRICS}
    expected = {"total_users": 1, "active_sms_configs": 0, "pending_credit_requests": 1,
                "failed_sms_24h": 1, "orphaned_data": 1}
    ensure(deltas == expected, f"after seeding, metric changes {deltas}, expected {expected}")


@check("health", "the report carries the vital signs, each with its check and thresholds")
def _vital_signs(v: Verifier):
    report = _health(v)
    metrics, checks, thresholds = report["metrics"], report.get("checks", {}), report.get("thresholds", {})
    missing = [m for m in VITAL_SIGNS if m not in metrics or m not in checks or m not in thresholds]
    ensure(not missing, f"vital signs without a value, check or thresholds: {missing}")
    bad = [m for m in VITAL_SIGNS if metrics[m] is not None
           and (not isinstance(metrics[m], (int, float)) or metrics[m] < 0)]
    ensure(not bad, f"vital signs that are not non-negative numbers: {bad}")
    ensure(0 < metrics["connection_usage"] <= 1, f"connection_usage {metrics['connection_usage']}")
    # A refusal that rolls back is counted all the same.
    before = metrics["security_refusals_1h"]
    state = v.error_of(Caller.user(v.new_user(status="suspended")), "select public.request_credits(10)")
    ensure(state == "42501", f"a suspended user requesting credits: {state or 'accepted'}")
    after = _health(v)["metrics"]["security_refusals_1h"]
    ensure(after >= before + 1, f"security_refusals_1h went from {before} to {after} after a refusal")
    return ", ".join(f"{m}={metrics[m]}" for m in VITAL_SIGNS[:4])


@check("health", "no active SMS configuration is critical with configure_sms_gateway")
def _health_codes(v: Verifier):
    v.sql("update public.sms_configurations set is_active = false where is_active")
    report = _health(v)
    ensure(report["metrics"]["active_sms_configs"] == 0, "active_sms_configs is not 0")
    ensure(report["system_status"] == "critical", f"status {report['system_status']!r} without a gateway")
    ensure("configure_sms_gateway" in report["recommendations"], f"recommendations {report['recommendations']}")
    v.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('verify', 'VERIFY', true)")
    report = _health(v)
    ensure(report["metrics"]["active_sms_configs"] == 1, "an active configuration is not counted")
    ensure("configure_sms_gateway" not in report["recommendations"], "configure_sms_gateway with a gateway active")


@check("health", "record_health_snapshot stores a snapshot and alerts on a change of status")
def _snapshot(v: Verifier):
    previous = v.one("select system_status from public.system_health_snapshots order by checked_at desc, id desc limit 1")
    snapshots, alerts = v.one("select count(*) from public.system_health_snapshots"), \
        v.one("select count(*) from public.system_alerts")
    v.sql("update public.sms_configurations set is_active = false where is_active")  # forces critical
    v.as_(SERVICE, "select public.record_health_snapshot()")
    ensure(v.one("select count(*) from public.system_health_snapshots") == snapshots + 1, "no snapshot stored")
    latest = v.one("select system_status from public.system_health_snapshots order by checked_at desc, id desc limit 1")
    ensure(latest == "critical", f"stored status {latest!r}")
    new_alerts = v.sql("select severity from public.system_alerts order by id desc limit 2")
    expected = 0 if previous == "critical" else 1
    got = v.one("select count(*) from public.system_alerts") - alerts
    ensure(got == expected, f"{got} alerts for a change {previous or 'none'} -> critical (expected {expected})")
    if expected:
        ensure(new_alerts[0][0] == "critical", f"alert severity {new_alerts[0][0]!r}")
    v.as_(SERVICE, "select public.record_health_snapshot()")
    ensure(v.one("select count(*) from public.system_alerts") - alerts == expected, "an alert without a change")
    state = v.error_of(Caller.user(v.new_user()), "select public.record_health_snapshot()")
    ensure(state == "42501", f"a user recording a snapshot: {state or 'accepted'}")


# -- retention cleanup ---------------------------------------------------------------------
@check("cleanup", "production_data_cleanup deletes exactly past the retention boundaries")
def _cleanup(v: Verifier):
    uid = v.new_user()
    goes, stays = [], []

    def seed(into: list, table: str, stmt: str, params=()):
        into.append((table, v.one(stmt + " returning id::text", list(params))))

    otp = "insert into public.otp_codes (phone, code_hash, expires_at) values ('+244900000001', 'x', now() - %s::interval)"
    seed(goes, "otp_codes", otp, ["2 hours 1 minute"])
    seed(stays, "otp_codes", otp, ["1 hour 59 minutes"])
    seed(stays, "otp_codes", otp, ["-10 minutes"])
    for table, cols, vals in (("admin_audit_logs", "action", "'verify'"),
                              ("pii_access_audit", "table_name", "'verify'"),
                              ("function_call_audit", "function_name, outcome", "'verify', 'ok'")):
        stmt = f"insert into public.{table} ({cols}, created_at) values ({vals}, now() - %s::interval)"
        seed(goes, table, stmt, ["2 years 1 day"])
        seed(stays, table, stmt, ["2 years -1 day"])
    job = ("insert into public.contact_import_jobs (user_id, status, created_at, completed_at) "
           "values (%s, %s, now() - interval '90 days', now() - %s::interval)")
    seed(goes, "contact_import_jobs", job, [uid, "completed", "31 days"])
    seed(goes, "contact_import_jobs", job, [uid, "failed", "31 days"])
    seed(stays, "contact_import_jobs", job, [uid, "completed", "29 days"])
    seed(stays, "contact_import_jobs", job, [uid, "failed", "29 days"])
    seed(stays, "contact_import_jobs",
         "insert into public.contact_import_jobs (user_id, status, created_at) values (%s, %s, now() - interval '90 days')",
         [uid, "processing"])
    seed(stays, "contact_import_jobs",
         "insert into public.contact_import_jobs (user_id, status, created_at) values (%s, %s, now() - interval '90 days')",
         [uid, "pending"])

    deleted = v.as_(SERVICE, "select public.production_data_cleanup()")[0][0]

    def present(table: str, row_id: str) -> bool:
        return v.one(sql.SQL("select count(*) from public.{} where id::text = %s").format(sql.Identifier(table)),
                     [row_id]) == 1

    kept_wrongly = [t for t, i in goes if present(t, i)]
    lost = [t for t, i in stays if not present(t, i)]
    ensure(not kept_wrongly, f"not deleted past retention: {kept_wrongly}")
    ensure(not lost, f"deleted inside retention: {lost}")
    ensure(isinstance(deleted, int) and deleted >= len(goes), f"returned {deleted} for at least {len(goes)} deletions")
    state = v.error_of(Caller.user(v.new_user()), "select public.production_data_cleanup()")
    ensure(state == "42501", f"a user running the cleanup: {state or 'accepted'}")
    return f"{len(goes)} seeded rows past, {len(stays)} inside the boundaries"


# -- running --------------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


AREAS = tuple(dict.fromkeys(c.area for c in CHECKS))


def run_checks(conn: psycopg.Connection, only: str | None = None) -> list[Result]:
    """Every check (or those of the comma-separated areas in `only`) in one transaction,
    each in a savepoint; everything is rolled back."""
    areas = {a.strip() for a in only.split(",")} if only else set(AREAS)
    unknown = areas - set(AREAS)
    if unknown:
        raise UserError(f"unknown check area(s) {', '.join(sorted(unknown))}: choose from {', '.join(AREAS)}")
    v = Verifier(conn)
    results: list[Result] = []
    with conn.transaction(force_rollback=True):
        # Never wait long on the app's locks, never run away: this may be production.
        conn.execute("set local lock_timeout = '5s'")
        conn.execute("set local statement_timeout = '120s'")
        for c in CHECKS:
            if c.area not in areas:
                continue
            started = time.perf_counter()
            try:
                with conn.transaction(force_rollback=True):
                    detail = c.run(v) or ""
                results.append(Result(c.name, c.area, True, detail, time.perf_counter() - started))
            except CheckFailed as exc:
                results.append(Result(c.name, c.area, False, str(exc), time.perf_counter() - started))
            except psycopg.Error as exc:
                results.append(Result(c.name, c.area, False, f"database error: {_first_line(exc)}",
                                      time.perf_counter() - started))
            except Exception as exc:  # a bug in a check must not hide the other checks
                tb = traceback.extract_tb(exc.__traceback__)[-1]
                results.append(Result(c.name, c.area, False, f"{type(exc).__name__}: {_first_line(exc)} "
                                      f"(line {tb.lineno})", time.perf_counter() - started))
    return results


def preflight(conn: psycopg.Connection) -> None:
    missing = [r for (r,) in conn.execute(
        "select r from unnest(%s::text[]) r where not exists (select from pg_roles where rolname = r)",
        [list(APP_ROLES)]).fetchall()]
    if missing:
        raise UserError(f"this is not an SMS AO database: roles missing: {', '.join(missing)}")
    cannot = [r for (r,) in conn.execute(
        "select r from unnest(%s::text[]) r where not pg_has_role(current_user, r, 'MEMBER')",
        [list(APP_ROLES)]).fetchall()]
    if cannot:
        user = conn.execute("select current_user").fetchone()[0]
        raise UserError(f"verify acts as the app's roles, but {user} may not `set role` to "
                        f"{', '.join(cannot)}: connect as a superuser or the schema owner")
    conn.rollback()


def verify(url: str, only: str | None = None) -> list[Result]:
    with connect(url, autocommit=False) as conn:
        preflight(conn)
        return run_checks(conn, only)


def render(results: list[Result], console) -> None:
    from rich.table import Table

    table = Table(title="smsao-db verify (one transaction, rolled back)", show_lines=False)
    table.add_column("area", style="dim")
    table.add_column("check")
    table.add_column("result", justify="center")
    table.add_column("detail", overflow="fold")
    table.add_column("s", justify="right", style="dim")
    for r in results:
        table.add_row(r.area, r.name, "[bold green]PASS[/]" if r.passed else "[bold red]FAIL[/]",
                      r.detail, f"{r.seconds:.2f}")
    console.print(table)
    failed = sum(not r.passed for r in results)
    if failed:
        console.print(f"[bold red]{failed} of {len(results)} checks failed[/]; nothing was committed")
    else:
        console.print(f"[bold green]all {len(results)} checks passed[/]; nothing was committed")
