"""The dashboard's Business page (GET /business), its CSV downloads, and the analytics figures
of /metrics. runner/web/app.py mounts `routes()` and registers
`AnalyticsCollector` next to its own.

The figures are the database's (runner/analytics/report.py calls business_metrics,
conversion_funnel and retention_cohorts, each audited as an admin read). Charts are drawn by
Chart.js from the figures the page carries as JSON; the library and the page's script
(runner/web/static/business.js) are served by runner/web/app.py's /static/ route, as for the health
dashboard: the page loads nothing from elsewhere.

Query parameters of /business and /business/<table>.csv:
  months   how many months up to the current one (1..120, default 12)
  steps    the funnel's steps, comma separated (2..10 event names; default the milestones
           signed_up, requested_credits, purchased_credits, sent_sms)
  since, until   the funnel's start range (dates, UTC; default the report's months)
  within   days from a user's first step within which later steps count (default 30)
"""
from __future__ import annotations

import csv
import io
import json
import logging
import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from runner.analytics import report as reports

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
TABLES = ("months", "funnel", "cohorts", "events")
NAME = re.compile(r"^[a-z][a-z0-9_]{1,62}$")

templates = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(["html"]),
                        trim_blocks=True, lstrip_blocks=True)


class BadParameter(ValueError):
    pass


def _date(raw: str | None, name: str) -> datetime | None:
    if raw in (None, ""):
        return None
    try:
        return datetime.combine(date.fromisoformat(raw), datetime.min.time(), timezone.utc)
    except ValueError:
        raise BadParameter(f"{name} must be a date (YYYY-MM-DD), got {raw!r}") from None


def parameters(request: Request) -> dict:
    """The page's parameters, checked; BadParameter names the one that is wrong."""
    q = request.query_params
    raw_months = q.get("months", "12")
    if not re.fullmatch(r"\d{1,3}", raw_months) or not 1 <= int(raw_months) <= reports.MAX_MONTHS:
        raise BadParameter(f"months must be a whole number from 1 to {reports.MAX_MONTHS}, got {raw_months!r}")
    steps = [s.strip() for s in q.get("steps", ",".join(reports.DEFAULT_FUNNEL)).split(",") if s.strip()]
    if not 2 <= len(steps) <= 10 or not all(NAME.match(s) for s in steps):
        raise BadParameter("steps must be 2 to 10 event names (lowercase letters, digits, _), comma separated")
    raw_within = q.get("within", "30")
    if not re.fullmatch(r"\d{1,4}", raw_within) or not 1 <= int(raw_within) <= 3650:
        raise BadParameter(f"within must be a number of days from 1 to 3650, got {raw_within!r}")
    since, until = _date(q.get("since"), "since"), _date(q.get("until"), "until")
    if since and until and until <= since:
        raise BadParameter("until must be after since")
    return {"months": int(raw_months), "steps": steps, "since": since, "until": until,
            "within": timedelta(days=int(raw_within))}


def load(request: Request, params: dict) -> reports.Report:
    store = request.app.state.store
    with store.pool.connection() as conn:
        return reports.fetch_from(conn, params["months"], params["steps"], params["since"], params["until"],
                                  within=params["within"])


def _plain(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def view(rep: reports.Report, params: dict) -> dict:
    months = []
    for m in rep.months:
        ratio = (m["ltv"] / m["cac"]) if m["ltv"] is not None and m["cac"] else None
        months.append({**m, "ltv_cac": None if ratio is None else round(ratio, 2)})
    cohorts: dict[date, dict] = {}
    for row in rep.cohorts:
        c = cohorts.setdefault(row["cohort_month"], {"month": row["cohort_month"], "size": row["cohort_size"],
                                                      "cells": []})
        share = (row["active_users"] / row["cohort_size"]) if row["cohort_size"] else None
        c["cells"].append({"k": row["months_since"], "active": row["active_users"], "share": share})
    width = max((row["months_since"] for row in rep.cohorts), default=-1) + 1
    return {
        "report": rep, "months": months, "cohorts": list(cohorts.values()), "cohort_width": width,
        "steps": ",".join(params["steps"]), "within_days": params["within"].days, "months_count": params["months"],
        "since": rep.funnel_since.date().isoformat(), "until": rep.funnel_until.date().isoformat(),
        "chart_data": json.dumps({"months": [{k: _plain(v) for k, v in m.items()} for m in months]}),
    }


def business_page(request: Request) -> Response:
    try:
        params = parameters(request)
    except BadParameter as exc:
        return JSONResponse({"error": str(exc)}, 400)
    rep = load(request, params)
    query = request.url.query
    html = templates.get_template("business.html").render(
        **view(rep, params), query=("?" + query) if query else "", now=datetime.now(timezone.utc))
    return HTMLResponse(html)


def csv_table(request: Request) -> Response:
    table = request.path_params["table"]
    if table not in TABLES:
        return JSONResponse({"error": f"no such table: {table} (one of {', '.join(TABLES)})"}, 404)
    try:
        params = parameters(request)
    except BadParameter as exc:
        return JSONResponse({"error": str(exc)}, 400)
    rows = getattr(load(request, params), table)
    columns = {"months": reports.METRIC_COLUMNS, "funnel": reports.FUNNEL_COLUMNS,
               "cohorts": reports.COHORT_COLUMNS, "events": ("event_name", "events")}[table]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else _plain(row[c]) for c in columns])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="smsao-{table}.csv"'})


def routes() -> list[Route]:
    return [
        Route("/business", business_page),
        Route("/business/{table}.csv", csv_table),
    ]


def read_live_figures(store) -> tuple:
    """This month's revenue and paying customers and the events counted, from
    public.analytics_live_figures() (rollups: a few small reads)."""
    with store.pool.connection() as conn:
        return conn.execute("select revenue, paying_customers, events from public.analytics_live_figures()").fetchone()


class AnalyticsCollector:
    """smsao_revenue_month, smsao_paying_customers_month and smsao_events_total{event}, from
    what one scrape read (read_live_figures)."""

    def __init__(self, row: tuple):
        self.row = row

    def describe(self):
        return []

    def collect(self):
        revenue_now, paying_now, counted = self.row
        revenue = GaugeMetricFamily("smsao_revenue_month",
                                    "Revenue of the current calendar month (UTC), in the price's currency")
        revenue.add_metric([], float(revenue_now))
        paying = GaugeMetricFamily("smsao_paying_customers_month",
                                   "Distinct users with a purchase in the current calendar month (UTC)")
        paying.add_metric([], paying_now)
        events = CounterMetricFamily("smsao_events", "Business events counted by name (milestones: first times)",
                                     labels=["event"])
        for name, count in sorted(counted.items()):
            events.add_metric([name], count)
        yield from (revenue, paying, events)
