"""Every query the dashboard (`smsao-db serve`) and `smsao-db monitor` run, over a small
psycopg_pool pool. Everything shown is read from what the database already stores (the
latest row of `system_health_snapshots`, `performance_samples`, open `system_alerts`), so
a page view or a scrape costs a few indexed reads; only `refresh` runs the health check."""
from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from runner.db import connect, libpq_url


# A dead server must not hang a page or a scrape: the kernel drops a connection whose data
# goes unacknowledged for 10 s, and keepalives find a peer that vanished while idle.
TCP_SETTINGS = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                "tcp_user_timeout": 10_000}


def act_as_service_role(conn: psycopg.Connection) -> None:
    """A login granted service_role becomes it, as PostgREST does for each request: service_role
    is who the monitoring functions admit, and it reads the monitoring tables past RLS (a
    login only inherits its grants, not its BYPASSRLS, and would see no row). A superuser or
    a member of the package's owner stays itself: it sees at least as much."""
    member = conn.execute("""
        select not r.rolsuper
               and not coalesce(pg_catalog.pg_has_role(current_user,
                     (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'smsao'), 'MEMBER'), false)
               and coalesce(pg_catalog.pg_has_role(current_user,
                     pg_catalog.to_regrole('service_role')::oid, 'MEMBER'), false)
          from pg_catalog.pg_roles r where r.rolname = current_user""").fetchone()[0]
    if member:
        try:
            with conn.transaction():  # a refusal then leaves no aborted transaction behind
                conn.execute("set role service_role")
        except psycopg.errors.InsufficientPrivilege:
            pass  # a membership without SET (PostgreSQL 16+): each refused call then says so


class DashboardStore:
    """Every query the dashboard runs, over a small connection pool.

    A read waits at most `wait_s` for a connection: when the server goes down, the pool's
    connections break and new ones are refused, and a page or a scrape then fails fast
    (runner.web.app answers "database down") rather than hanging past a scrape timeout."""

    def __init__(self, url: str, pool_size: int = 4, statement_timeout_ms: int = 15_000, wait_s: float = 1.5):
        def configure(conn: psycopg.Connection) -> None:
            conn.execute(f"set statement_timeout = {int(statement_timeout_ms)}")
            act_as_service_role(conn)

        self.url = url
        self.wait_s = wait_s
        self.pool = ConnectionPool(libpq_url(url), min_size=1, max_size=pool_size, open=False,
                                   kwargs={"autocommit": True, "connect_timeout": 10, **TCP_SETTINGS},
                                   configure=configure, timeout=wait_s, name="smsao-dashboard",
                                   # A connection is checked as it leaves the pool: after a
                                   # failover (or a restart) the dead ones are replaced, and a new
                                   # one finds the new primary through a multi-host URL.
                                   check=ConnectionPool.check_connection)

    def open(self) -> "DashboardStore":
        # One plain connection first, for a clear error (wrong password, unreachable, ...).
        connect(self.url).close()
        self.pool.open(wait=True, timeout=15)
        return self

    def close(self) -> None:
        self.pool.close()

    def _run(self, query: str, params=None, *, write: bool = False) -> list[dict]:
        # A pooled connection may have died with a server restart; a read is retried once.
        for attempt in (1, 2):
            try:
                with self.pool.connection(timeout=self.wait_s) as conn:
                    cur = conn.cursor(row_factory=dict_row)
                    cur.execute(query, params)
                    return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if write or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def health_json(self) -> str | None:
        """The latest snapshot as /api/health serves it, built as text in SQL."""
        rows = self._run("""
            select (s.report || pg_catalog.jsonb_build_object(
                      'system_status', s.system_status, 'checked_at', s.checked_at,
                      'snapshot_id', s.id,
                      'age_seconds', round(extract(epoch from pg_catalog.now() - s.checked_at)::numeric, 3)))::text
                   as body
              from public.system_health_snapshots s
             order by s.checked_at desc, s.id desc
             limit 1""")
        return rows[0]["body"] if rows else None

    def latest_snapshot(self) -> dict | None:
        rows = self._run("""
            select id, checked_at, system_status, report
              from public.system_health_snapshots
             order by checked_at desc, id desc limit 1""")
        return rows[0] if rows else None

    def latest_sample(self) -> dict | None:
        rows = self._run("""
            select sampled_at, response_time_ms::float8 as response_time_ms, error_rate::float8 as error_rate
              from public.performance_samples
             order by sampled_at desc, id desc limit 1""")
        return rows[0] if rows else None

    def open_alerts(self, limit: int = 50) -> list[dict]:
        return self._run("""
            select id, created_at, severity, message
              from public.system_alerts
             where acknowledged_at is null
             order by created_at desc, id desc
             limit %s""", [limit])

    def open_alert_counts(self) -> dict[str, int]:
        rows = self._run("""
            select severity, count(*)::int as n from public.system_alerts
             where acknowledged_at is null group by severity""")
        return {r["severity"]: r["n"] for r in rows}

    def response_series(self, hours: int = 24, bucket_minutes: int = 5) -> list[dict]:
        """Average and worst response time per bucket over the last `hours` (<= 288 points)."""
        return self._run("""
            select pg_catalog.date_bin(make_interval(mins => %(bucket)s), sampled_at,
                                       timestamptz '2000-01-01') as bucket,
                   avg(response_time_ms)::float8 as avg_ms, max(response_time_ms)::float8 as max_ms,
                   max(error_rate)::float8 as max_error_rate
              from public.performance_samples
             where sampled_at > pg_catalog.now() - make_interval(hours => %(hours)s)
             group by 1 order by 1""", {"bucket": bucket_minutes, "hours": hours})

    # -- security: refusals and errors counted through rollback, and the audit trails --
    # (through smsao.dashboard_*: readers service_role may execute, sql/functions/monitoring_access.sql)
    def critical_call_totals(self) -> list[dict]:
        """Calls, errors and refusals of each critical operation since counting began."""
        return self._run("select operation, calls, errors, refusals from smsao.dashboard_call_totals()")

    def critical_calls_last_hour(self) -> list[dict]:
        return self._run("""
            select operation, calls, errors, refusals
              from smsao.dashboard_calls_since(pg_catalog.now() - interval '1 hour')""")

    def critical_calls_per_hour(self, hours: int = 24) -> list[dict]:
        return self._run("select hour, calls, errors, refusals from smsao.dashboard_calls_per_hour(%s)", [hours])

    def admin_actions(self, page: int, per_page: int) -> list[dict]:
        """The newest admin actions, one page (1 = newest), one row more to tell a next page."""
        return self._run("""
            select id, created_at, admin_id, action, target_table, target_id
              from public.admin_audit_logs
             order by created_at desc, id desc
             limit %s offset %s""", [per_page + 1, (page - 1) * per_page])

    def pii_accesses(self, page: int, per_page: int) -> list[dict]:
        return self._run("""
            select id, created_at, accessor_id, subject_user_id, table_name, fields, purpose
              from public.pii_access_audit
             order by created_at desc, id desc
             limit %s offset %s""", [per_page + 1, (page - 1) * per_page])

    def acknowledge(self, alert_id: int) -> str:
        """'acknowledged', 'already' (acknowledged before) or 'missing'."""
        rows = self._run("""
            with ack as (
              update public.system_alerts set acknowledged_at = pg_catalog.now()
               where id = %(id)s and acknowledged_at is null
              returning id)
            select (select count(*) from ack) as done,
                   exists (select from public.system_alerts where id = %(id)s) as present""",
                         {"id": alert_id}, write=True)
        if rows[0]["done"]:
            return "acknowledged"
        return "already" if rows[0]["present"] else "missing"

    def health_check(self) -> dict:
        """The live health report (runs the check; stores nothing)."""
        return self._run("select public.production_system_health_check() as report")[0]["report"]

    def refresh(self) -> dict:
        """Run the health check now; it stores a snapshot (and an alert on a change)."""
        return self._run("select public.record_health_snapshot() as report", write=True)[0]["report"]
