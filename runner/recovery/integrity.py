"""`smsao-db integrity`: the invariants a restore, a bug or a bulk load with triggers off
could break, checked with read-only queries.

Shaped like Supabase's splinter: each check is ONE readable query with a name and a
remedy; the query returns one row per violation (a short text saying which), so an empty
result means the invariant holds. All queries run in one REPEATABLE READ, READ ONLY
transaction, so the counters and the tables they count are seen at the same instant
(the triggers keep them in the same transaction as every change). Nothing is written,
except that `amcheck` is created once (in its own schema, `smsao_amcheck`, out of the API)
when the database does not have it yet.

The recount definitions are those of `smsao.recount_health_counters()`
(sql/functions/health_counters.sql); that function is never called here: it rewrites
the counters.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import psycopg

from runner.analytics.checks import CHECKS as ANALYTICS_CHECKS
from runner.check import Check
from runner.db import connect
from runner.errors import UserError

SCHEMAS = ("public", "smsao", "auth", "smsao_migrations")
SAMPLE = 5  # violations quoted per failing check


@dataclass
class Result:
    name: str
    passed: bool
    violations: int
    detail: str
    remedy: str
    seconds: float


def _metric_check(metric: str, what: str, recount_sql: str) -> Check:
    return Check(
        name=f"counter_{metric}",
        description=f"smsao.health_counters '{metric}' equals {what}",
        query=f"""
            with counted as (
              select coalesce(sum(c.value), 0) as n from smsao.health_counters c
              where c.metric = '{metric}' and c.bucket = '-infinity'),
            recount as ({recount_sql})
            select format('{metric}: counter says %s, recount finds %s', counted.n, recount.n)
            from counted, recount where counted.n <> recount.n""",
        remedy="a change bypassed the counting triggers (session_replication_role = replica, or a restore "
               "from a bad copy): run `select smsao.recount_health_counters()` as the schema owner",
    )


ORPHANS = """
    select l.user_id, 'sms_logs' as tbl from public.sms_logs l
    where not exists (select from public.profiles p where p.user_id = l.user_id)
    union all
    select o.user_id, 'otp_codes' from public.otp_codes o
    where o.user_id is not null and not exists (select from public.profiles p where p.user_id = o.user_id)"""

CHECKS: list[Check] = [
    Check(
        name="balance_equals_ledger",
        description="every profiles.credits equals sum(credit_transactions.amount) of its user",
        query="""
            select format('user %s: credits %s, ledger %s', p.user_id, p.credits, coalesce(l.total, 0))
            from public.profiles p
            left join (select t.user_id, sum(t.amount) as total from public.credit_transactions t
                       group by t.user_id) l on l.user_id = p.user_id
            where p.credits is distinct from coalesce(l.total, 0)
            order by p.user_id""",
        remedy="a balance was changed without a ledger row (triggers bypassed): find out which is right, then "
               "insert the difference as an 'adjustment' into public.credit_transactions",
    ),
    _metric_check("total_users", "the number of profiles", "select count(*) as n from public.profiles"),
    _metric_check("pending_credit_requests", "the pending credit requests",
                  "select count(*) as n from public.credit_requests where status = 'pending'"),
    _metric_check("orphaned_sms_logs", "the sms_logs rows whose user has no profile",
                  f"select count(*) as n from ({ORPHANS}) x where x.tbl = 'sms_logs'"),
    _metric_check("orphaned_otp_codes", "the otp_codes rows whose user has no profile",
                  f"select count(*) as n from ({ORPHANS}) x where x.tbl = 'otp_codes'"),
    Check(
        name="counter_sms_hourly",
        description="per hour of the last 48 h, the 'sms' and 'sms_failed' counters equal the sms_logs rows",
        # Hours older than the 48 h window are not kept up to date (compaction drops them).
        query="""
            with window_start as (select smsao.hour_bucket(now() - interval '48 hours') as oldest),
            counted as (
              select c.metric, c.bucket, sum(c.value) as n from smsao.health_counters c, window_start w
              where c.metric in ('sms', 'sms_failed') and c.bucket >= w.oldest group by 1, 2),
            recount as (
              select m.metric, b.bucket, m.n
              from (select smsao.hour_bucket(l.created_at) as bucket, count(*) as total,
                           count(*) filter (where l.status = 'failed') as failed
                    from public.sms_logs l, window_start w where l.created_at >= w.oldest group by 1) b
              cross join lateral (values ('sms', b.total), ('sms_failed', b.failed)) as m(metric, n))
            select format('%s at %s: counter says %s, recount finds %s', coalesce(c.metric, r.metric),
                          to_char(coalesce(c.bucket, r.bucket) at time zone 'UTC', 'YYYY-MM-DD HH24:00 "UTC"'),
                          coalesce(c.n, 0), coalesce(r.n, 0))
            from counted c full join recount r on r.metric = c.metric and r.bucket = c.bucket
            where coalesce(c.n, 0) <> coalesce(r.n, 0)
            order by coalesce(c.bucket, r.bucket), 1""",
        remedy="SMS rows were written or deleted with the counting triggers off: run "
               "`select smsao.recount_health_counters()` as the schema owner",
    ),
    Check(
        name="orphan_owners_recorded",
        description="every owner of an orphaned sms_logs/otp_codes row is in smsao.missing_owners",
        query=f"""
            select format('user %s owns %s orphaned %s row(s) but is not in smsao.missing_owners',
                          x.user_id, count(*), string_agg(distinct x.tbl, '/'))
            from ({ORPHANS}) x
            where not exists (select from smsao.missing_owners m where m.user_id = x.user_id)
            group by x.user_id order by x.user_id""",
        remedy="an orphaned row or a profile deletion bypassed the triggers: run `select smsao.recount_health_counters()`",
    ),
    Check(
        name="missing_owners_have_no_profile",
        # An id may stay in missing_owners after its orphaned rows are gone (deletions do not
        # clean it up: that would cost a probe per deleted row); it must leave when a
        # profile with that id is created, which adopts the rows.
        description="no id in smsao.missing_owners has a profile",
        query="""
            select format('user %s has a profile but is listed in smsao.missing_owners', m.user_id)
            from smsao.missing_owners m
            where exists (select from public.profiles p where p.user_id = m.user_id)
            order by m.user_id""",
        remedy="a profile was created with the counting triggers off: run `select smsao.recount_health_counters()`",
    ),
]

# The analytics rollups (issue 18), checked the same way.
CHECKS += ANALYTICS_CHECKS

AMCHECK_REMEDY = ("rebuild the index (`reindex index concurrently ...`), then find the cause "
                  "(storage, a bad restore, a collation change); see docs/runbooks/restore.md")


def ensure_amcheck(conn: psycopg.Connection) -> str | None:
    """The schema holding amcheck, created when missing; None (and why) when that is not possible."""
    row = conn.execute("select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace "
                       "where e.extname = 'amcheck'").fetchone()
    if row:
        return row[0]
    try:
        with conn.transaction():
            conn.execute("create schema if not exists smsao_amcheck")
            conn.execute("revoke all on schema smsao_amcheck from public")
            conn.execute("create extension if not exists amcheck with schema smsao_amcheck")
    except psycopg.Error as exc:
        raise _AmcheckUnavailable(str(exc).strip().splitlines()[0]) from None
    return "smsao_amcheck"


class _AmcheckUnavailable(Exception):
    pass


def _run_check(conn: psycopg.Connection, check: Check) -> Result:
    started = time.perf_counter()
    try:
        with conn.transaction():
            rows = [r[0] for r in conn.execute(check.query).fetchall()]
    except psycopg.Error as exc:
        return Result(check.name, False, 1, f"the check itself failed: {str(exc).strip().splitlines()[0]}",
                      check.remedy, time.perf_counter() - started)
    detail = check.description if not rows else (
        f"{len(rows)} violation(s): " + "; ".join(rows[:SAMPLE]) + (" ..." if len(rows) > SAMPLE else ""))
    return Result(check.name, not rows, len(rows), detail, check.remedy, time.perf_counter() - started)


def _amcheck(conn: psycopg.Connection, schema: str | None, why_not: str | None) -> Result:
    started = time.perf_counter()
    if schema is None:
        return Result("btree_indexes_amcheck", False, 1, f"amcheck is not available: {why_not}",
                      "a superuser runs `create extension amcheck` (contrib, shipped with PostgreSQL)", 0.0)
    indexes = conn.execute("""
        select format('%%I.%%I', n.nspname, ic.relname), ic.oid
        from pg_index i
        join pg_class ic on ic.oid = i.indexrelid
        join pg_namespace n on n.oid = ic.relnamespace
        join pg_am am on am.oid = ic.relam
        where am.amname = 'btree' and n.nspname = any(%s) and i.indisvalid and i.indisready
          and ic.relpersistence <> 't'
          and ic.relkind = 'i'   -- a partitioned table's index has no pages (its partitions' do)
        order by 1""", [list(SCHEMAS)]).fetchall()
    broken = []
    for name, oid in indexes:
        try:
            with conn.transaction():
                conn.execute(f"select {schema}.bt_index_check(%s::regclass)", [oid])
        except psycopg.Error as exc:
            broken.append(f"{name}: {str(exc).strip().splitlines()[0]}")
    detail = (f"{len(indexes)} btree indexes of {', '.join(SCHEMAS)} pass bt_index_check" if not broken else
              f"{len(broken)} of {len(indexes)} indexes corrupt: " + "; ".join(broken[:SAMPLE]))
    return Result("btree_indexes_amcheck", not broken, len(broken), detail, AMCHECK_REMEDY,
                  time.perf_counter() - started)


def run(url: str) -> list[Result]:
    with connect(url, autocommit=True) as conn:
        if not conn.execute("select to_regclass('smsao.health_counters') is not null").fetchone()[0]:
            raise UserError("this is not a migrated SMS AO database (no smsao.health_counters): "
                            "run `smsao-db migrate upgrade head` first")
        try:
            schema, why_not = ensure_amcheck(conn), None
        except _AmcheckUnavailable as exc:
            schema, why_not = None, str(exc)
        conn.autocommit = False
        conn.execute("set transaction isolation level repeatable read, read only")
        # Never stall the app: this may run against production.
        conn.execute("set local lock_timeout = '5s'")
        results = [_run_check(conn, c) for c in CHECKS]
        results.append(_amcheck(conn, schema, why_not))
        conn.rollback()
    return results


def render(results: list[Result], console) -> None:
    for r in results:
        if r.passed:
            console.print(f"[green]ok[/green]   {r.name}: {r.detail} ({r.seconds:.2f} s)", highlight=False)
        else:
            console.print(f"[red]FAIL[/red] {r.name}: {r.detail} -- remedy: {r.remedy}", highlight=False)
    failed = [r.name for r in results if not r.passed]
    console.print(f"[bold red]{len(failed)} of {len(results)} invariants broken[/]: {', '.join(failed)}"
                  if failed else f"[bold green]all {len(results)} invariants hold[/]", highlight=False)


def main(url: str, as_json: bool, console) -> int:
    results = run(url)
    if as_json:
        print(json.dumps({"passed": all(r.passed for r in results),
                          "checks": [asdict(r) for r in results]}, indent=2))
    else:
        render(results, console)
    return 0 if all(r.passed for r in results) else 1
