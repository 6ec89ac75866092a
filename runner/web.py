"""`smsao-db serve`: the admin web dashboard, `/api/health` and Prometheus `/metrics`.

Everything shown is read from what the database already stores (the latest row of
`system_health_snapshots`, `performance_samples`, open `system_alerts`), so a page view or
a scrape costs a few indexed reads; only the refresh button runs the health check
(`public.record_health_snapshot()`, which also stores the snapshot and raises alerts).

Standard library HTTP (ThreadingHTTPServer) and a small psycopg_pool pool; no JavaScript
or CSS from elsewhere (the chart is inline SVG), so the page works on an isolated host.

Access: bound to 127.0.0.1 by default. Any other address needs a token, and then every
request must carry it (`Authorization: Bearer <token>`, `?token=<token>` which also sets
an HttpOnly cookie for the browser, or that cookie). Without a token the server answers
only Host headers naming the loopback (no DNS rebinding), and POSTs from a page of another
origin are refused (no cross-site request forgery).

Routes: GET / (page), GET /api/health, POST /api/refresh,
POST /api/alerts/<id>/acknowledge, GET /metrics, GET /healthz (liveness, no database).
"""
from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from runner import health
from runner.db import connect, libpq_url
from runner.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_COOKIE = "smsao_dashboard_token"
STATUSES = ("healthy", "warning", "critical", "unknown")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- reading the database -------------------------------------------------------------------
class DashboardStore:
    """Every query the dashboard runs, over a small connection pool."""

    def __init__(self, url: str, pool_size: int = 4, statement_timeout_ms: int = 15_000):
        def configure(conn: psycopg.Connection) -> None:
            conn.execute(f"set statement_timeout = {int(statement_timeout_ms)}")

        self.url = url
        self.pool = ConnectionPool(libpq_url(url), min_size=1, max_size=pool_size, open=False,
                                   kwargs={"autocommit": True, "connect_timeout": 10},
                                   configure=configure, timeout=10, name="smsao-dashboard")

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
                with self.pool.connection() as conn:
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


# -- Prometheus -----------------------------------------------------------------------------
def _metric_name(name: str) -> str:
    return "smsao_" + re.sub(r"[^a-zA-Z0-9_]", "_", name).lower()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class HealthCollector:
    """Reads the latest stored snapshot and sample at scrape time (no health check is run)."""

    def __init__(self, store: DashboardStore):
        self.store = store

    def describe(self):
        return []  # metric names depend on the snapshot: nothing to register up front

    def collect(self):
        up = GaugeMetricFamily("smsao_up", "1 when the dashboard could read the database")
        try:
            snapshot = self.store.latest_snapshot()
            sample = self.store.latest_sample()
            alerts = self.store.open_alert_counts()
        except (psycopg.Error, PoolTimeout) as exc:
            log.warning("metrics scrape could not read the database: %s", exc)
            up.add_metric([], 0)
            yield up
            yield from self._status("unknown")
            return
        up.add_metric([], 1)
        yield up
        status = snapshot["system_status"] if snapshot else "unknown"
        yield from self._status(status)
        if snapshot:
            checked = GaugeMetricFamily("smsao_health_check_timestamp_seconds",
                                        "Unix time of the latest stored health check")
            checked.add_metric([], snapshot["checked_at"].timestamp())
            yield checked
            yield from self._health_metrics(snapshot["report"].get("metrics") or {})
        open_alerts = GaugeMetricFamily("smsao_open_alerts", "Unacknowledged system alerts",
                                        labels=["severity"])
        for severity in ("warning", "critical", "recovered"):
            open_alerts.add_metric([severity], alerts.get(severity, 0))
        yield open_alerts
        if sample:
            rt = GaugeMetricFamily("smsao_response_time_seconds",
                                   "Response time measured by the latest performance sample")
            rt.add_metric([], sample["response_time_ms"] / 1000.0)
            er = GaugeMetricFamily("smsao_error_rate",
                                   "Share of audited calls with outcome 'error' in the sampled minute (0..1)")
            er.add_metric([], sample["error_rate"])
            ts = GaugeMetricFamily("smsao_performance_sample_timestamp_seconds",
                                   "Unix time of the latest performance sample")
            ts.add_metric([], sample["sampled_at"].timestamp())
            yield from (rt, er, ts)

    @staticmethod
    def _status(status: str):
        onehot = GaugeMetricFamily("smsao_system_status",
                                   "1 for the current system status of the latest health check",
                                   labels=["status"])
        for s in STATUSES:
            onehot.add_metric([s], 1 if s == status else 0)
        code = GaugeMetricFamily("smsao_system_status_code",
                                 "System status as the health exit code: 0 healthy, 1 warning, 2 critical, 3 unknown")
        code.add_metric([], health.exit_code({"system_status": status}))
        return onehot, code

    @staticmethod
    def _health_metrics(metrics: dict):
        """One gauge per numeric health metric; an object of numbers becomes a labelled gauge."""
        for key, value in sorted(metrics.items()):
            number = _number(value)
            if number is not None:
                g = GaugeMetricFamily(_metric_name(key), f"Health check metric '{key}'")
                g.add_metric([], number)
                yield g
            elif isinstance(value, dict):
                parts = {k: _number(v) for k, v in value.items()}
                parts = {k: v for k, v in parts.items() if v is not None}
                if parts:
                    g = GaugeMetricFamily(_metric_name(key), f"Health check metric '{key}' by part",
                                          labels=["part"])
                    for k, v in sorted(parts.items()):
                        g.add_metric([k], v)
                    yield g


# -- the page -------------------------------------------------------------------------------
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _when(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "never"
    age = (now - ts).total_seconds()
    if age < 90:
        ago = f"{max(age, 0):.0f} s ago"
    elif age < 5400:
        ago = f"{age / 60:.0f} min ago"
    elif age < 172800:
        ago = f"{age / 3600:.1f} h ago"
    else:
        ago = f"{age / 86400:.0f} days ago"
    stamp = ts.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{ts.isoformat()}">{stamp}</time> <span class="ago">({ago})</span>'


def _recommendation(code: Any) -> tuple[str, str]:
    code = str(code)
    text = health.RECOMMENDATIONS.get(code, code.replace("_", " "))
    return code, text[:1].upper() + text[1:]


def response_chart(series: list[dict], now: datetime, hours: int = 24, bucket_minutes: int = 5) -> str:
    """An inline SVG line chart of average (and worst) response time per bucket."""
    w, h, left, right, top, bottom = 760, 220, 56, 12, 14, 28
    pw, ph = w - left - right, h - top - bottom
    start = now - timedelta(hours=hours)
    parts = [f'<svg class="chart" viewBox="0 0 {w} {h}" role="img" '
             f'aria-label="Response time over the last {hours} hours">']
    if not series:
        parts.append(f'<text x="{w / 2}" y="{h / 2}" text-anchor="middle" class="muted">'
                     f'no performance samples in the last {hours} hours</text></svg>')
        return "".join(parts)
    peak = max(p["max_ms"] for p in series) or 1.0
    ymax = peak * 1.1

    def x(ts: datetime) -> float:
        return left + pw * min(max((ts - start).total_seconds() / (hours * 3600), 0), 1)

    def y(ms: float) -> float:
        return top + ph * (1 - ms / ymax)

    for frac in (0, 0.5, 1):
        yy = top + ph * (1 - frac)
        parts.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{w - right}" y2="{yy:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="axis">'
                     f'{ymax * frac:.1f} ms</text>')
    for hh in range(0, hours + 1, 6):
        ts = start + timedelta(hours=hh)
        anchor = "start" if hh == 0 else "end" if hh == hours else "middle"
        parts.append(f'<text x="{x(ts):.1f}" y="{h - 8}" text-anchor="{anchor}" class="axis">'
                     f'{ts.astimezone(timezone.utc):%H:%M}</text>')

    # A gap in sampling (no bucket) breaks the line rather than drawing across it.
    def path(key: str) -> str:
        d, prev = [], None
        for p in series:
            cmd = "L" if prev is not None and (p["bucket"] - prev) <= timedelta(minutes=bucket_minutes) else "M"
            d.append(f"{cmd}{x(p['bucket']):.1f},{y(p[key]):.1f}")
            prev = p["bucket"]
        return " ".join(d)

    parts.append(f'<path d="{path("max_ms")}" class="line-max"/>')
    parts.append(f'<path d="{path("avg_ms")}" class="line-avg"/>')
    if len(series) == 1:
        p = series[0]
        parts.append(f'<circle cx="{x(p["bucket"]):.1f}" cy="{y(p["avg_ms"]):.1f}" r="3" class="dot"/>')
    parts.append("</svg>")
    return "".join(parts)


PAGE_CSS = """
:root { --ok:#1a7f37; --warn:#9a6700; --crit:#cf222e; --unk:#6e7781; --fg:#1f2328; --muted:#59636e;
        --bg:#f6f8fa; --card:#fff; --line:#d1d9e0; --accent:#0969da; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; align-items:center; gap:16px; padding:14px 24px; background:#fff; border-bottom:1px solid var(--line); flex-wrap:wrap; }
header h1 { font-size:18px; margin:0; }
header .spacer { flex:1; }
main { padding:20px 24px; max-width:1100px; margin:0 auto; }
.badge { display:inline-flex; align-items:center; gap:6px; padding:4px 12px; border-radius:999px; font-weight:600;
         color:#fff; text-transform:uppercase; letter-spacing:.04em; font-size:13px; }
.badge::before { content:""; width:8px; height:8px; border-radius:50%; background:currentColor; opacity:.9; box-shadow:0 0 0 2px rgba(255,255,255,.5); }
.badge.big { font-size:20px; padding:6px 18px; }
.hero { display:flex; align-items:center; gap:14px; margin-bottom:8px; }
.hero-label { font-size:20px; font-weight:600; }
.status-healthy { background:var(--ok); } .status-warning { background:var(--warn); }
.status-critical { background:var(--crit); } .status-unknown { background:var(--unk); }
.status-recovered { background:var(--ok); }
.muted, .ago { color:var(--muted); }
.times { font-size:13px; color:var(--muted); margin:0 0 16px; }
.times span + span::before { content:" · "; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(170px, 1fr)); gap:12px; margin-bottom:20px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .label { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
.card .value { font-size:26px; font-weight:600; font-variant-numeric:tabular-nums; }
.card.level-warning { border-color:var(--warn); box-shadow:inset 4px 0 0 var(--warn); } .card.level-warning .value { color:var(--warn); }
.card.level-critical { border-color:var(--crit); box-shadow:inset 4px 0 0 var(--crit); } .card.level-critical .value { color:var(--crit); }
section { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px; margin-bottom:20px; }
section h2 { font-size:15px; margin:0 0 10px; }
ul.recs { margin:0; padding-left:20px; } ul.recs code { font-size:12px; color:var(--muted); }
table.alerts { width:100%; border-collapse:collapse; }
table.alerts td { padding:8px 6px; border-top:1px solid var(--line); vertical-align:middle; }
table.alerts td.when { white-space:nowrap; font-size:13px; }
button { font:inherit; border:1px solid var(--line); background:#fff; border-radius:6px; padding:5px 12px; cursor:pointer; }
button:hover { border-color:var(--accent); color:var(--accent); }
button.primary { background:var(--accent); color:#fff; border-color:var(--accent); }
button.primary:hover { color:#fff; filter:brightness(1.1); }
button[disabled] { opacity:.6; cursor:progress; }
.error { background:#ffebe9; border:1px solid var(--crit); color:var(--crit); padding:10px 14px; border-radius:8px; margin-bottom:16px; }
svg.chart { width:100%; height:auto; display:block; }
svg .grid { stroke:var(--line); stroke-width:1; }
svg .axis { fill:var(--muted); font-size:11px; }
svg .line-avg { fill:none; stroke:var(--accent); stroke-width:2; }
svg .line-max { fill:none; stroke:var(--accent); stroke-width:1; stroke-dasharray:3 3; opacity:.45; }
svg .dot { fill:var(--accent); }
.legend { font-size:12px; color:var(--muted); }
#flash { font-size:13px; color:var(--muted); min-width:12ch; }
"""

PAGE_JS = """
const flash = document.getElementById('flash');
const every = Number(document.body.dataset.refresh) * 1000;
function say(text) { flash.textContent = text; }
async function reload() {
  const r = await fetch(location.pathname, {headers: {'Accept': 'text/html'}, cache: 'no-store'});
  if (!r.ok) { say('reload failed: HTTP ' + r.status); return; }
  const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
  document.getElementById('content').replaceWith(doc.getElementById('content'));
  document.title = doc.title;
}
async function post(url) {
  const r = await fetch(url, {method: 'POST', headers: {'X-Smsao-Dashboard': '1'}});
  let body = {}; try { body = await r.json(); } catch (e) {}
  if (!r.ok) throw new Error(body.error || ('HTTP ' + r.status));
  return body;
}
document.addEventListener('click', async (ev) => {
  const btn = ev.target.closest('button[data-action]');
  if (!btn) return;
  btn.disabled = true;
  try {
    if (btn.dataset.action === 'refresh') {
      say('running health check…');
      await post('/api/refresh');
      say('health check done');
    } else if (btn.dataset.action === 'ack') {
      await post('/api/alerts/' + btn.dataset.id + '/acknowledge');
      say('alert ' + btn.dataset.id + ' acknowledged');
    }
    await reload();
  } catch (e) { say('failed: ' + e.message); }
  finally { btn.disabled = false; }
});
if (every > 0) setInterval(() => reload().catch(e => say('reload failed: ' + e.message)), every);
"""


@dataclass
class PageData:
    now: datetime
    snapshot: dict | None
    sample: dict | None
    alerts: list[dict]
    series: list[dict]
    error: str | None = None


def load_page_data(store: DashboardStore) -> PageData:
    now = datetime.now(timezone.utc)
    try:
        return PageData(now, store.latest_snapshot(), store.latest_sample(), store.open_alerts(),
                        store.response_series())
    except (psycopg.Error, PoolTimeout) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PageData(now, None, None, [], [], error=f"cannot read the database: {first}")


STATUS_COLOURS = {"healthy": "#1a7f37", "warning": "#9a6700", "critical": "#cf222e", "unknown": "#6e7781"}


def _favicon(status: str) -> str:
    """A dot in the status colour: the browser tab shows the status too (and asks for no file)."""
    colour = STATUS_COLOURS.get(status, STATUS_COLOURS["unknown"]).replace("#", "%23")
    return ("data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'>"
            f"<circle cx='8' cy='8' r='7' fill='{colour}'/></svg>")


def render_page(data: PageData, refresh_seconds: int) -> str:
    now, snap = data.now, data.snapshot
    status = snap["system_status"] if snap else "unknown"
    report = (snap or {}).get("report") or {}
    metrics = report.get("metrics") or {}
    body: list[str] = []
    if data.error:
        body.append(f'<div class="error" role="alert">{_esc(data.error)}</div>')
    elif not snap:
        body.append('<div class="error" role="alert">No health check stored yet: press '
                    '“Run health check now” or schedule it (`smsao-db schedule apply`).</div>')

    body.append('<p class="times">'
                f'<span>Last check: {_when(snap["checked_at"] if snap else None, now)}</span>'
                f'<span>Last performance sample: {_when(data.sample["sampled_at"] if data.sample else None, now)}</span>'
                f'<span>Page rendered: {now:%Y-%m-%d %H:%M:%S} UTC</span></p>')

    cards = []
    # The health command's metrics first, in its order (and with its labels); others after.
    order = {k: i for i, k in enumerate(health.METRICS)}
    levels = report.get("checks") or {}
    for key, value in sorted(metrics.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])):
        label = health.METRICS.get(key, (key.replace("_", " "),))[0]
        level = levels.get(key, "ok")
        cards.append(f'<div class="card level-{_esc(level)}" data-metric="{_esc(key)}" data-level="{_esc(level)}">'
                     f'<div class="label">{_esc(label)}</div>'
                     f'<div class="value">{_esc(health.format_value(key, value))}</div></div>')
    if data.sample:
        cards.append('<div class="card" data-metric="response_time_ms"><div class="label">response time</div>'
                     f'<div class="value">{data.sample["response_time_ms"]:.1f} ms</div></div>')
        cards.append(f'<div class="card{" level-warning" if data.sample["error_rate"] else ""}" data-metric="error_rate">'
                     '<div class="label">error rate</div>'
                     f'<div class="value">{data.sample["error_rate"] * 100:.2f} %</div></div>')
    cards.append(f'<div class="card{" level-warning" if data.alerts else ""}" data-metric="open_alerts">'
                 f'<div class="label">open alerts</div><div class="value">{len(data.alerts)}</div></div>')
    body.append(f'<div class="cards">{"".join(cards)}</div>')

    recs = report.get("recommendations") or []
    items = "".join(f'<li data-code="{_esc(code)}">{_esc(text)} <code>{_esc(code)}</code></li>'
                    for code, text in map(_recommendation, recs))
    body.append('<section id="recommendations"><h2>Recommendations</h2>'
                + (f'<ul class="recs">{items}</ul>' if items else '<p class="muted">None: nothing to do.</p>')
                + '</section>')

    if data.alerts:
        rows = "".join(
            f'<tr data-alert-id="{a["id"]}"><td><span class="badge status-{_esc(a["severity"])}">'
            f'{_esc(a["severity"])}</span></td><td class="when">{_when(a["created_at"], now)}</td>'
            f'<td>{_esc(a["message"])}</td><td><button data-action="ack" data-id="{a["id"]}">'
            'Acknowledge</button></td></tr>' for a in data.alerts)
        alerts_html = f'<table class="alerts">{rows}</table>'
    else:
        alerts_html = '<p class="muted">No open alerts.</p>'
    body.append(f'<section id="alerts"><h2>Open alerts</h2>{alerts_html}</section>')

    body.append('<section id="performance"><h2>Response time, last 24 hours</h2>'
                + response_chart(data.series, now)
                + '<div class="legend">solid: average per 5 minutes · dashed: worst per 5 minutes · times in UTC</div>'
                + '</section>')

    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(status)} · SMS AO database</title>
<link rel="icon" href="{_favicon(status)}">
<style>{PAGE_CSS}</style></head>
<body data-refresh="{int(refresh_seconds)}">
<header><h1>SMS AO database</h1>
<span class="spacer"></span><span id="flash" aria-live="polite"></span>
<button class="primary" data-action="refresh">Run health check now</button></header>
<main id="content" data-status="{_esc(status)}">
<div class="hero"><span class="hero-label">System status</span>
<span id="status" class="badge big status-{_esc(status)}">{_esc(status)}</span></div>
{"".join(body)}
</main>
<script>{PAGE_JS}</script>
</body></html>"""


# -- HTTP ---------------------------------------------------------------------------------
def _token_cookie(token: str) -> str:
    """The browser keeps the token after one visit with ?token=, so the page's own requests carry it."""
    c = SimpleCookie()
    c[TOKEN_COOKIE] = token
    c[TOKEN_COOKIE].update({"httponly": True, "samesite": "Strict", "path": "/"})
    return c.output(header="").strip()


UNAUTHORIZED_PAGE = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>token required · SMS AO database</title><link rel="icon" href="{_favicon('unknown')}"></head>
<body style="font-family:system-ui,sans-serif;margin:40px"><h1>Token required</h1>
<p>This dashboard serves only requests that carry its token: open it as
<code>/?token=&lt;token&gt;</code> (the browser then keeps it in a cookie), or send
<code>Authorization: Bearer &lt;token&gt;</code>.</p></body></html>"""


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, store: DashboardStore, *, token: str | None = None,
                 refresh_seconds: int = 30):
        if not is_loopback(host) and not token:
            raise UserError(f"serving on {host} (not loopback) needs a token: pass --token or set "
                            "SMSAO_DASHBOARD_TOKEN, or bind to 127.0.0.1")
        self.store = store
        self.token = token
        self.refresh_seconds = refresh_seconds
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HealthCollector(store))
        try:
            super().__init__((host, port), DashboardHandler)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def serve_in_thread(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="smsao-dashboard", daemon=True)
        t.start()
        return t


class DashboardHandler(BaseHTTPRequestHandler):
    server: DashboardServer
    protocol_version = "HTTP/1.1"  # keep-alive: scrapers and the page reuse connections
    # Headers and body go out in two writes; with Nagle on, the second waits for the
    # client's delayed ACK (~40 ms per response on a kept-alive connection).
    disable_nagle_algorithm = True
    server_version = "smsao-dashboard"

    # -- plumbing --------------------------------------------------------------------------
    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes | str, content_type: str, headers: dict | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        body = payload if isinstance(payload, str) else json.dumps(payload, default=str)
        self._send(status, body, "application/json", headers)

    def _presented_token(self, query: dict) -> tuple[str | None, bool]:
        """The token the request carries, and whether it came in the query string."""
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        if "token" in query:
            return query["token"][0], True
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        if TOKEN_COOKIE in cookie:
            return cookie[TOKEN_COOKIE].value, False
        return None, False

    def _allowed(self, query: dict) -> tuple[bool, dict]:
        """Check token / Host / Origin; on success, headers to add (the token cookie)."""
        srv = self.server
        if srv.token:
            given, from_query = self._presented_token(query)
            if not given or not hmac.compare_digest(given.encode(), srv.token.encode()):
                challenge = {"WWW-Authenticate": 'Bearer realm="smsao-dashboard"'}
                if "text/html" in self.headers.get("Accept", ""):
                    self._send(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED_PAGE, "text/html; charset=utf-8", challenge)
                else:
                    self._json(HTTPStatus.UNAUTHORIZED, {"error": "a valid token is required"}, challenge)
                return False, {}
            extra = {"Set-Cookie": _token_cookie(srv.token)} if from_query else {}
        else:
            # Without a token only loopback names are served: a DNS-rebinding page cannot reach us.
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname
            if host and not is_loopback(host):
                self._json(HTTPStatus.FORBIDDEN, {"error": f"host {host!r} is not served without a token"})
                return False, {}
            extra = {}
        if self.command == "POST":
            origin = self.headers.get("Origin")
            if origin and urlsplit(origin).netloc != self.headers.get("Host"):
                self._json(HTTPStatus.FORBIDDEN, {"error": "cross-origin request refused"})
                return False, {}
        return True, extra

    # -- routes ----------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        ok, extra = self._allowed(query)
        if not ok:
            return
        try:
            if url.path == "/":
                html_text = render_page(load_page_data(self.server.store), self.server.refresh_seconds)
                self._send(HTTPStatus.OK, html_text, "text/html; charset=utf-8", extra)
            elif url.path == "/api/health":
                self._api_health(extra)
            elif url.path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(self.server.registry), CONTENT_TYPE_LATEST, extra)
            elif url.path == "/healthz":
                self._send(HTTPStatus.OK, "ok\n", "text/plain; charset=utf-8", extra)
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {url.path}"})
        except (psycopg.Error, PoolTimeout) as exc:
            self._db_error(exc)

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        ok, extra = self._allowed(parse_qs(url.query))
        if not ok:
            return
        # Any request body is ignored, but must be read so that keep-alive stays in step.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(min(length, 1 << 16))
        try:
            if url.path == "/api/refresh":
                self._json(HTTPStatus.OK, self.server.store.refresh(), extra)
                return
            m = re.fullmatch(r"/api/alerts/(\d{1,18})/acknowledge", url.path)
            if m:
                outcome = self.server.store.acknowledge(int(m.group(1)))
                status = {"acknowledged": HTTPStatus.OK, "already": HTTPStatus.CONFLICT,
                          "missing": HTTPStatus.NOT_FOUND}[outcome]
                self._json(status, {"id": int(m.group(1)), "outcome": outcome}, extra)
                return
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such action: {url.path}"})
        except (psycopg.Error, PoolTimeout) as exc:
            self._db_error(exc)

    def _api_health(self, extra: dict) -> None:
        body = self.server.store.health_json()
        if body is None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE,
                       {"system_status": "unknown", "error": "no health check stored yet"}, extra)
        else:
            self._json(HTTPStatus.OK, body, extra)

    def _db_error(self, exc: Exception) -> None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, psycopg.errors.UndefinedFunction):
            first += " (is the database migrated to head? `smsao-db migrate upgrade`)"
        log.warning("dashboard request %s %s failed: %s", self.command, self.path, first)
        self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"system_status": "unknown", "error": first})


def serve(url: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
          refresh_seconds: int = 30, on_ready=None) -> None:
    """Run the dashboard until interrupted."""
    if not is_loopback(host) and not token:
        raise UserError(f"serving on {host} (not loopback) needs a token: pass --token or set "
                        "SMSAO_DASHBOARD_TOKEN, or bind to 127.0.0.1")
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
