"""`smsao-db serve`: the admin web dashboard, `/api/health` and Prometheus `/metrics`.

A Starlette app on uvicorn (httptools parser): the page is a Jinja2 template
(runner/web/templates/), the scrape is prometheus-client's exposition of the latest stored
snapshot, and every query is in runner.monitoring.store (a few indexed reads; only the refresh button
runs the health check). Database work runs on a few daemon threads under a time budget, so
that every GET answers within 2 s even when the database is down or hangs. Charts are drawn by
Chart.js from data the page carries as JSON; the library (MIT, from the npm registry, its license
beside it) and the pages' scripts are served from runner/web/static/ by this app (GET /static/<name>),
so the page works on an isolated host, and the Content-Security-Policy lets scripts come from
this origin only (no inline script). Without JavaScript the figures are on the page as text.

Access (the `Guard` middleware, before any route): bound to 127.0.0.1 by default. Any
other address needs a token, and then every request must carry it (`Authorization: Bearer
<token>`, `?token=<token>` which also sets an HttpOnly SameSite cookie for the browser, or
that cookie). Without a token the server answers only Host headers naming the loopback (no
DNS rebinding). POSTs from a page of another origin are refused (no cross-site request
forgery), and request bodies (never used) are refused above 64 KiB or without a length.
Malformed requests (bad Content-Length, bad Host) get a 4xx from uvicorn or the guard.

Routes: GET / (page), GET /api/health, POST /api/refresh,
POST /api/alerts/<id>/acknowledge, GET /metrics, GET /healthz (liveness, no database),
GET /static/<name> (the files of runner/web/static/), and the Business page's (runner/analytics/web.py).
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import queue
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from runner.analytics import web as analytics_web
from runner.db import first_line
from runner.errors import UserError
from runner.monitoring import health
from runner.monitoring.store import DashboardStore
from runner.resources import STATIC_DIR, TEMPLATES_DIR

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_COOKIE = "smsao_dashboard_token"
STATUSES = ("healthy", "warning", "critical", "unknown")
MAX_BODY = 64 * 1024  # no route reads a body; anything bigger is refused unread
STATUS_COLOURS = {"healthy": "#1a7f37", "warning": "#9a6700", "critical": "#cf222e", "unknown": "#6e7781"}
# Scripts from this origin only (Chart.js and the pages' scripts under /static/; the JSON data
# blocks are not scripts); inline styles stay allowed (the templates' bars and heatmap use them).
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
                           "frame-ancestors 'none'")
# Added to every response that does not set its own (a static file says how long to keep it).
SECURITY_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"), (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]
# The files GET /static/<name> serves, with their types; nothing else under any name.
STATIC_FILES = {"chart.umd.min.js": "text/javascript; charset=utf-8",
                "chart.js-LICENSE.md": "text/plain; charset=utf-8",
                "dashboard.js": "text/javascript; charset=utf-8",
                "business.js": "text/javascript; charset=utf-8"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _needs_token(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise UserError(f"serving on {host} (not loopback) needs a token: pass --token or set "
                        "SMSAO_DASHBOARD_TOKEN, or bind to 127.0.0.1")


# -- the database within a time budget -------------------------------------------------------
# Prometheus gives up on a scrape after 10 s, and a person on a page after a few: every read
# that serves a GET answers within READ_BUDGET_S, "database down" included. The store fails
# fast when the server is gone (its connections break, new ones are refused, the pool waits
# 1.5 s at most); the budget also holds when the server hangs without closing anything.
READ_BUDGET_S = 1.8
# A button's write (refresh, acknowledge) may wait longer, but not forever on a hung server.
WRITE_BUDGET_S = 10.0


class DatabaseTimeout(Exception):
    """The database did not answer within the budget."""


DATABASE_ERRORS = (psycopg.Error, PoolTimeout, DatabaseTimeout)


@dataclass
class _Job:
    work: Any
    args: tuple
    done: Any                 # called on the worker with the job once it has run
    abandoned: bool = False
    value: Any = None
    error: BaseException | None = None


class _Workers:
    """A few daemon threads that run the requests' database work, so that a request can stop
    waiting for it. The endpoints are async and hand their work here: one hand-off, as
    Starlette's own thread pool would make for a blocking endpoint, but to daemon threads, so
    a thread stuck on a hung server never holds up the exit."""

    def __init__(self, size: int = 8):
        self.size = size
        self.jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def submit(self, job: _Job) -> None:
        if len(self.threads) < self.size:
            with self.lock:
                if len(self.threads) < self.size:
                    t = threading.Thread(target=self._serve, name=f"smsao-dashboard-db-{len(self.threads)}",
                                         daemon=True)
                    t.start()
                    self.threads.append(t)
        self.jobs.put(job)

    def _serve(self) -> None:
        while True:
            job = self.jobs.get()
            if job.abandoned:   # its request gave up while it queued: do not run it late
                continue
            try:
                job.value = job.work(*job.args)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request as is
                job.error = exc
            job.done(job)


_workers = _Workers()


async def within_budget(work, *args, budget: float | None = None):
    """work(*args) on a worker thread, awaited for at most `budget` seconds (READ_BUDGET_S).
    Work that overruns is left to finish or fail on its own, holding at most one pooled
    connection meanwhile: with the pool's connections all held by a hung server, later work
    fails at once for want of a connection (there are more workers than connections)."""
    budget = READ_BUDGET_S if budget is None else budget
    loop = asyncio.get_running_loop()
    finished: asyncio.Future = loop.create_future()

    def settle(outcome) -> None:
        if not finished.done():
            finished.set_result(outcome)

    def done(job: _Job) -> None:
        try:
            loop.call_soon_threadsafe(settle, job)
        except RuntimeError:
            pass  # the server stopped meanwhile: nobody waits

    job = _Job(work, args, done)
    timer = loop.call_later(budget, settle, None)
    _workers.submit(job)
    try:
        if await finished is None:
            job.abandoned = True
            raise DatabaseTimeout(f"the database did not answer within {budget:g} s")
    finally:
        timer.cancel()
    if job.error is not None:
        raise job.error
    return job.value


def database_problem(exc: BaseException) -> str:
    """One line saying why the database could not be read."""
    if isinstance(exc, PoolTimeout):
        return "no connection to the database (is the server running?)"
    return first_line(exc)


# -- Prometheus -----------------------------------------------------------------------------
# Prometheus' naming rules (https://prometheus.io/docs/practices/naming/): base units spelled
# out, ratios (0..1) as _ratio, _total only on counters; `promtool check metrics` lints them.
# A health report metric is named by its key, with these suffixes rewritten...
UNIT_SUFFIXES = ((re.compile(r"_s$"), "_seconds", 1.0), (re.compile(r"_ms$"), "_seconds", 0.001),
                 (re.compile(r"_rate$"), "_ratio", 1.0))
# ...and these keys, whose unit is not in their name, renamed outright.
PROMETHEUS_NAMES = {"connection_usage": "smsao_connection_usage_ratio",
                    "wal_archive_failing": "smsao_wal_archive_failing_segments"}


def prometheus_name(key: str) -> tuple[str, float]:
    """The Prometheus name of a health report metric, and the factor to its base unit
    (longest_transaction_s -> smsao_longest_transaction_seconds, sms_failure_rate ->
    smsao_sms_failure_ratio)."""
    name = re.sub(r"[^a-zA-Z0-9_]", "_", key).lower()
    if name in PROMETHEUS_NAMES:
        return PROMETHEUS_NAMES[name], 1.0
    for suffix, unit, factor in UNIT_SUFFIXES:
        if suffix.search(name):
            return "smsao_" + suffix.sub(unit, name), factor
    return "smsao_" + name, 1.0


def _number(value: Any) -> float | None:
    if isinstance(value, (bool, int, float)):
        return float(value)
    return None


def read_metrics(store: DashboardStore) -> tuple:
    """What a scrape shows: the latest snapshot and sample, open alerts, the call counters."""
    return store.latest_snapshot(), store.latest_sample(), store.open_alert_counts(), store.critical_call_totals()


class HealthCollector:
    """The exposition of what one scrape read (read_metrics), or of the database being down
    (None). No health check is run: the latest stored snapshot is shown."""

    def __init__(self, read: tuple | None):
        self.read = read

    def describe(self):
        return []  # metric names depend on the snapshot: nothing to register up front

    def collect(self):
        up = GaugeMetricFamily("smsao_up", "1 when the dashboard could read the database")
        if self.read is None:
            up.add_metric([], 0)
            yield up
            yield from self._status("unknown")
            return
        snapshot, sample, alerts, calls = self.read
        up.add_metric([], 1)
        yield up
        yield from self._status(snapshot["system_status"] if snapshot else "unknown")
        if snapshot:
            checked = GaugeMetricFamily("smsao_health_check_timestamp_seconds",
                                        "Unix time of the latest stored health check")
            checked.add_metric([], snapshot["checked_at"].timestamp())
            yield checked
            yield from self._health_metrics(snapshot["report"].get("metrics") or {})
        yield self._critical_calls(calls)
        open_alerts = GaugeMetricFamily("smsao_open_alerts", "Unacknowledged system alerts", labels=["severity"])
        for severity in ("warning", "critical", "recovered"):
            open_alerts.add_metric([severity], alerts.get(severity, 0))
        yield open_alerts
        if sample:
            rt = GaugeMetricFamily("smsao_response_time_seconds",
                                   "Response time measured by the latest performance sample")
            rt.add_metric([], sample["response_time_ms"] / 1000.0)
            er = GaugeMetricFamily("smsao_error_ratio",
                                   "Share of the critical calls that ended in an error (refusals excluded) "
                                   "since the previous performance sample (0..1)")
            er.add_metric([], sample["error_rate"])
            ts = GaugeMetricFamily("smsao_performance_sample_timestamp_seconds",
                                   "Unix time of the latest performance sample")
            ts.add_metric([], sample["sampled_at"].timestamp())
            yield from (rt, er, ts)

    @staticmethod
    def _status(status: str):
        onehot = GaugeMetricFamily("smsao_system_status",
                                   "1 for the current system status of the latest health check", labels=["status"])
        for s in STATUSES:
            onehot.add_metric([s], 1 if s == status else 0)
        code = GaugeMetricFamily("smsao_system_status_code",
                                 "System status as the health exit code: 0 healthy, 1 warning, 2 critical, 3 unknown")
        code.add_metric([], health.exit_code({"system_status": status}))
        return onehot, code

    @staticmethod
    def _critical_calls(totals: list[dict]) -> CounterMetricFamily:
        """Calls of the critical operations by outcome, counted through rollback (sequences)."""
        counter = CounterMetricFamily(
            "smsao_critical_calls", "Calls of the critical operations since counting began, by outcome "
            "(calls: all; errors: failed other than refused; refusals: denied or rate limited), "
            "rolled-back calls included", labels=["operation", "outcome"])
        for row in totals:
            for outcome in ("calls", "errors", "refusals"):
                counter.add_metric([row["operation"], outcome], row[outcome])
        return counter

    @staticmethod
    def _health_metrics(metrics: dict):
        """One gauge per numeric health metric (none for one not measurable: null); an object of
        numbers becomes a labelled gauge."""
        for key, value in sorted(metrics.items()):
            name, factor = prometheus_name(key)
            number = _number(value)
            if number is not None:
                g = GaugeMetricFamily(name, f"Health check metric '{key}' of the latest stored snapshot")
                g.add_metric([], number * factor)
                yield g
            elif isinstance(value, dict):
                parts = {k: n for k, n in ((k, _number(v)) for k, v in value.items()) if n is not None}
                if parts:
                    g = GaugeMetricFamily(name, f"Health check metric '{key}' of the latest stored snapshot, "
                                                "by part", labels=["part"])
                    for k, v in sorted(parts.items()):
                        g.add_metric([k], v * factor)
                    yield g


# -- what the page shows --------------------------------------------------------------------
AUDIT_PAGE_SIZE = 10


@dataclass
class Security:
    """The Security panel: refusals per hour, the last hour per operation, and one page of each
    audit trail (pages count from 1 = newest)."""
    per_hour: list[dict] = field(default_factory=list)
    last_hour: list[dict] = field(default_factory=list)
    admin_actions: list[dict] = field(default_factory=list)
    pii_accesses: list[dict] = field(default_factory=list)
    admin_page: int = 1
    pii_page: int = 1
    admin_more: bool = False
    pii_more: bool = False


@dataclass
class PageData:
    now: datetime
    snapshot: dict | None
    sample: dict | None
    alerts: list[dict]
    series: list[dict]
    security: Security = field(default_factory=Security)
    error: str | None = None


def load_security(store: DashboardStore, admin_page: int, pii_page: int) -> Security:
    admin = store.admin_actions(admin_page, AUDIT_PAGE_SIZE)
    pii = store.pii_accesses(pii_page, AUDIT_PAGE_SIZE)
    return Security(store.critical_calls_per_hour(24), store.critical_calls_last_hour(),
                    admin[:AUDIT_PAGE_SIZE], pii[:AUDIT_PAGE_SIZE], admin_page, pii_page,
                    len(admin) > AUDIT_PAGE_SIZE, len(pii) > AUDIT_PAGE_SIZE)


def read_page_data(store: DashboardStore, now: datetime, admin_page: int, pii_page: int) -> PageData:
    return PageData(now, store.latest_snapshot(), store.latest_sample(), store.open_alerts(),
                    store.response_series(), load_security(store, admin_page, pii_page))


async def load_page_data(store: DashboardStore, admin_page: int = 1, pii_page: int = 1) -> PageData:
    """What the page shows, or (within the read budget) why the database could not be read."""
    now = datetime.now(timezone.utc)
    try:
        return await within_budget(read_page_data, store, now, admin_page, pii_page)
    except DATABASE_ERRORS as exc:
        return PageData(now, None, None, [], [], error=f"cannot read the database: {database_problem(exc)}")


@dataclass
class Card:
    key: str
    label: str
    value: str
    level: str = "ok"
    why: str | None = None   # why the value is unknown, when the report says


@dataclass
class CardGroup:
    id: str
    title: str
    cards: list[Card] = field(default_factory=list)


# The cards, in groups, in page order: (id, title, metric keys). A metric of the health
# report goes to the group that lists it (others, unlisted, to the first group), labelled
# and formatted as `smsao-db health` does; its level comes from the report's "checks".
# A new group of report metrics (say "engine": longest_transaction_s, connection_usage, ...)
# is one line here.
CARD_GROUPS = (
    ("application", "Application", ("total_users", "active_sms_configs", "pending_credit_requests",
                                    "failed_sms_24h", "sms_failure_rate", "orphaned_data")),
    ("engine", "Engine", ("longest_transaction_s", "connection_usage", "xid_age_ratio", "blocked_sessions",
                          "database_size_bytes")),
    ("scheduler", "Scheduler", ("health_snapshot_age_s", "cron_failures_1h")),
    ("recovery", "Backups and recovery", ("backup_age_s", "restore_drill_age_s", "wal_archive_failing")),
    ("security", "Security", ("security_refusals_1h",)),
    ("replication", "Replication", ("replication_standbys", "replication_lag_bytes", "replication_lag_s")),
    ("performance", "Performance and alerts", ("response_time_ms", "error_rate", "open_alerts")),
)


def cards(data: PageData) -> list[CardGroup]:
    report = (data.snapshot or {}).get("report") or {}
    checks = report.get("checks") or {}
    unknown = health.unknown_reasons(report)
    found = {key: Card(key, health.METRICS.get(key, (key.replace("_", " "),))[0],
                       "unknown" if key in unknown else health.format_value(key, value),
                       checks.get(key, "ok"), unknown.get(key))
             for key, value in (report.get("metrics") or {}).items()}
    if data.sample:
        found["response_time_ms"] = Card("response_time_ms", "response time", f"{data.sample['response_time_ms']:.1f} ms")
        rate = data.sample["error_rate"]
        found["error_rate"] = Card("error_rate", "error rate", f"{rate * 100:.2f} %", "warning" if rate else "ok")
    found["open_alerts"] = Card("open_alerts", "open alerts", str(len(data.alerts)),
                                "warning" if data.alerts else "ok")
    groups = [CardGroup(gid, title, [found.pop(k) for k in keys if k in found]) for gid, title, keys in CARD_GROUPS]
    groups[0].cards += [found[k] for k in sorted(found)]
    return [g for g in groups if g.cards]


def when(ts: datetime | None, now: datetime) -> dict | None:
    """A timestamp as the page shows it: UTC stamp and how long ago."""
    if ts is None:
        return None
    age = max((now - ts).total_seconds(), 0)
    if age < 90:
        ago = f"{age:.0f} s ago"
    elif age < 5400:
        ago = f"{age / 60:.0f} min ago"
    elif age < 172800:
        ago = f"{age / 3600:.1f} h ago"
    else:
        ago = f"{age / 86400:.0f} days ago"
    return {"iso": ts.isoformat(), "stamp": ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"), "ago": ago}


def recommendation(code: Any) -> dict:
    code = str(code)
    text = health.RECOMMENDATIONS.get(code, code.replace("_", " "))
    return {"code": code, "text": text[:1].upper() + text[1:]}


def bucket_floor(ts: datetime, minutes: int) -> datetime:
    """The start of ts's bucket, as date_bin(minutes, ts, '2000-01-01') in store.response_series."""
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
    step = timedelta(minutes=minutes)
    return epoch + ((ts - epoch) // step) * step


def response_chart(series: list[dict], now: datetime, hours: int = 24, bucket_minutes: int = 5) -> dict:
    """The response-time chart's data (drawn by Chart.js from the page's JSON) and the figures the
    page states as text. One slot per bucket over the last `hours`, UTC labels; a bucket without
    samples is null, so the line breaks where sampling stopped instead of drawing across it."""
    view: dict[str, Any] = {"hours": hours, "bucket_minutes": bucket_minutes, "data": None}
    if not series:
        return view
    step = timedelta(minutes=bucket_minutes)
    by_bucket = {p["bucket"]: p for p in series}
    # The database's clock may run a little ahead of `now`: its newest bucket is kept.
    first = min(bucket_floor(now - timedelta(hours=hours), bucket_minutes), series[0]["bucket"])
    last = max(bucket_floor(now, bucket_minutes), series[-1]["bucket"])
    slots = [first + i * step for i in range((last - first) // step + 1)]
    view["data"] = {
        "labels": [f"{t.astimezone(timezone.utc):%H:%M}" for t in slots],
        "avg_ms": [by_bucket[t]["avg_ms"] if t in by_bucket else None for t in slots],
        "max_ms": [by_bucket[t]["max_ms"] if t in by_bucket else None for t in slots],
    }
    latest, worst = series[-1], max(series, key=lambda p: p["max_ms"])
    view["latest"] = {"at": f"{latest['bucket'].astimezone(timezone.utc):%H:%M}",
                      "avg": f"{latest['avg_ms']:.1f} ms", "max": f"{latest['max_ms']:.1f} ms"}
    view["worst"] = {"at": f"{worst['bucket'].astimezone(timezone.utc):%H:%M}", "max": f"{worst['max_ms']:.1f} ms"}
    return view


def favicon(status: str) -> str:
    """A dot in the status colour: the browser tab shows the status too (and asks for no file)."""
    colour = STATUS_COLOURS.get(status, STATUS_COLOURS["unknown"]).replace("#", "%23")
    return ("data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>"
            f"<circle cx='8' cy='8' r='7' fill='{colour}'/></svg>")


templates = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True, auto_reload=False)


def render_page(data: PageData, refresh_seconds: int) -> str:
    status = data.snapshot["system_status"] if data.snapshot else "unknown"
    report = (data.snapshot or {}).get("report") or {}
    return templates.get_template("dashboard.html").render(
        status=status, favicon=favicon(status), refresh_seconds=int(refresh_seconds), error=data.error,
        has_snapshot=data.snapshot is not None,
        checked=when(data.snapshot["checked_at"] if data.snapshot else None, data.now),
        sampled=when(data.sample["sampled_at"] if data.sample else None, data.now),
        now=f"{data.now:%Y-%m-%d %H:%M:%S}", card_groups=cards(data),
        recommendations=[recommendation(c) for c in report.get("recommendations") or []],
        alerts=[{**a, "when": when(a["created_at"], data.now)} for a in data.alerts],
        response=response_chart(data.series, data.now), security=security_view(data.security, data.now))


def security_view(sec: Security, now: datetime) -> dict:
    """The Security panel for the template: refusals per hour (the chart's data, and the hours
    that had any, as text), the operations of the last hour, and the two audit pages. An hour
    before the first performance sample is null: not known, not 0."""
    hours = [{"label": f"{h['hour'].astimezone(timezone.utc):%H:00}", "refusals": h["refusals"],
              "errors": h["errors"], "calls": h["calls"]} for h in sec.per_hour]
    known = [h for h in hours if h["refusals"] is not None]
    chart = None
    if known:
        chart = {key: [h[key] for h in hours] for key in ("refusals", "errors", "calls")}
        chart["labels"] = [h["label"] for h in hours]
    span = ("the last 24 hours" if len(known) >= 24 else "the last hour with samples" if len(known) == 1
            else f"the last {len(known)} hours with samples")
    return {"chart": chart, "known_span": span,
            "refused_hours": [h for h in known if h["refusals"]],
            "refusals_total": sum(h["refusals"] for h in known),
            "operations": [o for o in sec.last_hour if o["calls"]],
            "admin_actions": [{**a, "when": when(a["created_at"], now)} for a in sec.admin_actions],
            "pii_accesses": [{**a, "when": when(a["created_at"], now)} for a in sec.pii_accesses],
            "admin_page": sec.admin_page, "pii_page": sec.pii_page,
            "admin_more": sec.admin_more, "pii_more": sec.pii_more}


# -- routes ---------------------------------------------------------------------------------
def _store(request: Request) -> DashboardStore:
    return request.app.state.store


def page_number(request: Request, name: str) -> int | None:
    """A ?<name>=N page number (1 when absent); None when malformed."""
    raw = request.query_params.get(name, "1")
    return int(raw) if re.fullmatch(r"[1-9]\d{0,5}", raw) else None


# The routes that use the database are async: their work goes to this app's own workers
# under a time budget (within_budget), not to Starlette's thread pool.
async def page(request: Request) -> Response:
    admin_page, pii_page = page_number(request, "admin_page"), page_number(request, "pii_page")
    if admin_page is None or pii_page is None:
        return JSONResponse({"error": "admin_page and pii_page must be page numbers from 1"}, 400)
    data = await load_page_data(_store(request), admin_page, pii_page)
    return HTMLResponse(render_page(data, request.app.state.refresh_seconds))


async def api_health(request: Request) -> Response:
    body = await within_budget(_store(request).health_json)
    if body is None:
        return JSONResponse({"system_status": "unknown", "error": "no health check stored yet"}, 503)
    return Response(body, media_type="application/json")


async def refresh(request: Request) -> Response:
    report = await within_budget(_store(request).refresh, budget=WRITE_BUDGET_S)
    return Response(json.dumps(report, default=str), media_type="application/json")


async def acknowledge(request: Request) -> Response:
    raw = request.path_params["alert_id"]
    if not re.fullmatch(r"\d{1,18}", raw):
        return JSONResponse({"error": f"no such action: {request.url.path}"}, 404)
    outcome = await within_budget(_store(request).acknowledge, int(raw), budget=WRITE_BUDGET_S)
    status = {"acknowledged": 200, "already": 409, "missing": 404}[outcome]
    return JSONResponse({"id": int(raw), "outcome": outcome}, status)


async def metrics(request: Request) -> Response:
    try:
        read = await within_budget(read_metrics, _store(request))
    except DATABASE_ERRORS as exc:
        log.warning("metrics scrape could not read the database: %s", database_problem(exc))
        read = None
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(read))
    if read is not None:  # the database answered: the business figures too, within the same bound
        try:
            registry.register(analytics_web.AnalyticsCollector(
                await within_budget(analytics_web.read_live_figures, _store(request))))
        except DATABASE_ERRORS as exc:
            log.warning("metrics scrape could not read the analytics: %s", database_problem(exc))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def static_file(request: Request) -> Response:
    """A file of runner/web/static/ named in STATIC_FILES. Revalidated on every page load (no-cache),
    so an upgraded package's scripts are never mixed with an older page."""
    name = request.path_params["name"]
    if name not in STATIC_FILES:
        return JSONResponse({"error": f"no such file: {name}"}, 404)
    return FileResponse(STATIC_DIR / name, media_type=STATIC_FILES[name], headers={"cache-control": "no-cache"})


async def not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    what = "page" if request.method in ("GET", "HEAD") else "action"
    return JSONResponse({"error": f"no such {what}: {request.method} {request.url.path}"}, status)


async def database_error(request: Request, exc: Exception) -> Response:
    first = database_problem(exc)
    if isinstance(exc, psycopg.errors.UndefinedFunction):
        first += " (is the database migrated to head? `smsao-db migrate upgrade`)"
    log.warning("dashboard request %s %s failed: %s", request.method, request.url.path, first)
    return JSONResponse({"system_status": "unknown", "error": first}, 503)


def create_app(store: DashboardStore, *, token: str | None = None, refresh_seconds: int = 30) -> Guard:
    app = Starlette(routes=[
        Route("/", page),
        Route("/api/health", api_health),
        Route("/api/refresh", refresh, methods=["POST"]),
        Route("/api/alerts/{alert_id}/acknowledge", acknowledge, methods=["POST"]),
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/static/{name}", static_file),
        *analytics_web.routes(),
    ], exception_handlers={404: not_found, 405: not_found, psycopg.Error: database_error,
                           PoolTimeout: database_error, DatabaseTimeout: database_error})
    app.state.store = store
    app.state.refresh_seconds = refresh_seconds
    return Guard(app, token)


# -- access control -------------------------------------------------------------------------
class Guard:
    """ASGI middleware in front of every route: token, Host, Origin and body size checks, the
    token cookie, and the security headers on every response."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        refusal, extra = self.check(scope, headers)

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                own = message.get("headers", [])
                named = {k.lower() for k, _ in own}
                message["headers"] = [*own, *(h for h in SECURITY_HEADERS if h[0] not in named), *extra]
            await send(message)

        if refusal is not None:
            return await refusal(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)

    def check(self, scope, headers: dict[str, str]) -> tuple[Response | None, list]:
        """A response refusing the request (or None), and headers to add to the answer."""
        extra: list = []
        if self.token:
            given, from_query = self.presented_token(scope, headers)
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return self.unauthorized(headers), extra
            if from_query:
                extra.append((b"set-cookie", token_cookie(self.token).encode("latin-1")))
        else:
            # Without a token only loopback names are served: a DNS-rebinding page cannot reach us.
            try:
                host = urlsplit("//" + headers.get("host", "")).hostname
            except ValueError:
                return JSONResponse({"error": "malformed Host header"}, 400), extra
            if host and not is_loopback(host):
                return JSONResponse({"error": f"host {host!r} is not served without a token"}, 403), extra
        if scope["method"] == "POST" and "origin" in headers:
            try:
                same = urlsplit(headers["origin"]).netloc == headers.get("host")
            except ValueError:
                same = False
            if not same:
                return JSONResponse({"error": "cross-origin request refused"}, 403), extra
        if "transfer-encoding" in headers:  # a body of unknown length: no route takes one
            return JSONResponse({"error": "request bodies need a Content-Length"}, 411), extra
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            return JSONResponse({"error": "malformed Content-Length"}, 400), extra
        if length is not None and int(length) > MAX_BODY:
            return JSONResponse({"error": f"request body over {MAX_BODY} bytes"}, 413), extra
        return None, extra

    @staticmethod
    def presented_token(scope, headers: dict[str, str]) -> tuple[str | None, bool]:
        """The token the request carries, and whether it came in the query string."""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if "token" in query:
            return query["token"][0], True
        try:
            cookie = SimpleCookie(headers.get("cookie", ""))
        except CookieError:
            return None, False
        return (cookie[TOKEN_COOKIE].value, False) if TOKEN_COOKIE in cookie else (None, False)

    @staticmethod
    def unauthorized(headers: dict[str, str]) -> Response:
        challenge = {"WWW-Authenticate": 'Bearer realm="smsao-dashboard"'}
        if "text/html" in headers.get("accept", ""):
            html = templates.get_template("unauthorized.html").render(favicon=favicon("unknown"))
            return HTMLResponse(html, 401, headers=challenge)
        return JSONResponse({"error": "a valid token is required"}, 401, headers=challenge)


def token_cookie(token: str) -> str:
    """The browser keeps the token after one visit with ?token=, so the page's own requests carry it."""
    c = SimpleCookie()
    c[TOKEN_COOKIE] = token
    c[TOKEN_COOKIE].update({"httponly": True, "samesite": "Strict", "path": "/"})
    return c.output(header="").strip()


# -- the server -----------------------------------------------------------------------------
class DashboardServer:
    """uvicorn serving the app on a socket bound here (so port 0 is known at once, and a busy
    port is one clear error), in the foreground or in a thread (tests)."""

    def __init__(self, host: str, port: int, store: DashboardStore, *, token: str | None = None,
                 refresh_seconds: int = 30):
        _needs_token(host, token)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # proto given: asyncio disables Nagle only on sockets that say IPPROTO_TCP, and with
        # Nagle a kept-alive connection waits ~40 ms (the client's delayed ACK) per response.
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError as exc:
            self.socket.close()
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.socket.listen(128)
        config = uvicorn.Config(create_app(store, token=token, refresh_seconds=refresh_seconds),
                                http="httptools", lifespan="off", access_log=False, log_config=None,
                                server_header=False, timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def server_address(self) -> tuple:
        return self.socket.getsockname()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self.server.run(sockets=[self.socket])

    def serve_in_thread(self) -> threading.Thread:
        self.thread = threading.Thread(target=self.serve_forever, name="smsao-dashboard", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.thread

    def shutdown(self) -> None:
        self.server.should_exit = True
        if self.thread:
            self.thread.join(10)

    def server_close(self) -> None:
        self.socket.close()


def serve(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          refresh_seconds: int = 30, on_ready=None) -> None:
    """Run the dashboard until interrupted."""
    _needs_token(host, token)
    store = DashboardStore(url).open()
    try:
        server = DashboardServer(host, port, store, token=token, refresh_seconds=refresh_seconds)
        if on_ready:
            on_ready(server)
        try:
            server.serve_forever()
        finally:
            server.server_close()
    finally:
        store.close()
