"""`smsao-db analytics report`: section 7's figures in the terminal (or as JSON).

Everything is computed by the database's own readers (business_metrics, conversion_funnel,
retention_cohorts), called as the trusted backend; event totals come from the day counts.
The dashboard's Business page shows the same data (runner/analytics/web.py)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import psycopg

from runner.db import connect
from runner.errors import UserError

DEFAULT_FUNNEL = ("signed_up", "requested_credits", "purchased_credits", "sent_sms")
METRIC_COLUMNS = ("month", "revenue", "mrr", "paying_customers", "new_paying_customers", "churned_customers",
                  "arppu", "cac", "ltv", "acquisition_spend")
FUNNEL_COLUMNS = ("step", "event_name", "users", "conversion_from_first", "conversion_from_previous")
COHORT_COLUMNS = ("cohort_month", "months_since", "cohort_size", "active_users")
MAX_MONTHS = 120


@dataclass
class Report:
    from_month: date
    to_month: date
    within_days: int = 30
    months: list[dict] = field(default_factory=list)
    funnel: list[dict] = field(default_factory=list)
    funnel_since: datetime | None = None
    funnel_until: datetime | None = None
    cohorts: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)

    def as_json(self) -> dict:
        return json.loads(json.dumps(self.__dict__, default=_plain))


def _plain(value):
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def month_range(months: int, today: date | None = None) -> tuple[date, date]:
    """The last `months` calendar months (UTC), the current one included."""
    if not 1 <= months <= MAX_MONTHS:
        raise UserError(f"--months must be between 1 and {MAX_MONTHS}, got {months}")
    today = today or datetime.now(timezone.utc).date()
    to_month = today.replace(day=1)
    index = to_month.year * 12 + to_month.month - 1 - (months - 1)
    return date(index // 12, index % 12 + 1, 1), to_month


def rows(conn: psycopg.Connection, columns: tuple[str, ...], query: str, params) -> list[dict]:
    return [dict(zip(columns, r)) for r in conn.execute(query, params).fetchall()]


def fetch_from(conn: psycopg.Connection, months: int = 12, steps=DEFAULT_FUNNEL,
               funnel_since: datetime | None = None, funnel_until: datetime | None = None,
               within: timedelta = timedelta(days=30)) -> Report:
    """The report over one connection of the owner or a service_role login."""
    from_month, to_month = month_range(months)
    if conn.execute("select to_regprocedure('public.business_metrics(date, date)') is null").fetchone()[0]:
        raise UserError("this database has no analytics yet: run `smsao-db migrate upgrade head`")
    report = Report(from_month, to_month, within_days=within.days)
    report.months = rows(conn, METRIC_COLUMNS, "select * from public.business_metrics(%s, %s)", [from_month, to_month])
    report.funnel_until = funnel_until or datetime.now(timezone.utc)
    report.funnel_since = funnel_since or datetime.combine(from_month, datetime.min.time(), timezone.utc)
    report.funnel = rows(conn, FUNNEL_COLUMNS, "select * from public.conversion_funnel(%s, %s, %s, %s)",
                         [list(steps), report.funnel_since, report.funnel_until, within])
    report.cohorts = rows(conn, COHORT_COLUMNS, "select * from public.retention_cohorts(%s, %s)",
                          [max(from_month, month_range(min(months, 12))[0]), to_month])
    report.events = rows(conn, ("event_name", "events"), """
        select c.event_name, sum(c.events)::bigint from smsao.event_counts c
        where c.day >= %s group by 1 having sum(c.events) <> 0 order by 2 desc, 1""",
                         [from_month])
    return report


def fetch(url: str, months: int = 12) -> Report:
    with connect(url, autocommit=True) as conn:
        return fetch_from(conn, months)


def money(x) -> str:
    return "-" if x is None else f"{x:,.2f}"


def percent(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def render(report: Report, console) -> None:
    from rich.table import Table

    t = Table(title=f"Business metrics {report.from_month:%Y-%m} .. {report.to_month:%Y-%m} (AOA)")
    for name in ("month", "revenue", "MRR", "paying", "new", "churned", "ARPPU", "CAC", "LTV", "LTV/CAC", "spend"):
        t.add_column(name, justify="left" if name == "month" else "right")
    for m in report.months:
        ratio = (m["ltv"] / m["cac"]) if m["ltv"] is not None and m["cac"] else None
        t.add_row(f"{m['month']:%Y-%m}", money(m["revenue"]), money(m["mrr"]), str(m["paying_customers"]),
                  str(m["new_paying_customers"]), str(m["churned_customers"]), money(m["arppu"]), money(m["cac"]),
                  money(m["ltv"]), "-" if ratio is None else f"{ratio:.2f}", money(m["acquisition_spend"]))
    console.print(t)

    f = Table(title=f"Funnel {report.funnel_since:%Y-%m-%d} .. {report.funnel_until:%Y-%m-%d} (within {report.within_days} days)")
    for name in ("step", "event", "users", "from first", "from previous", ""):
        f.add_column(name, justify="right" if name not in ("event", "") else "left")
    for s in report.funnel:
        share = float(s["conversion_from_first"] or 0)
        f.add_row(str(s["step"]), s["event_name"], str(s["users"]), percent(s["conversion_from_first"]),
                  percent(s["conversion_from_previous"]), "█" * round(share * 30))
    console.print(f)

    if report.cohorts:
        width = max(c["months_since"] for c in report.cohorts) + 1
        c = Table(title="Retention: share of each signup cohort sending SMS k months later")
        c.add_column("cohort")
        c.add_column("size", justify="right")
        for k in range(width):
            c.add_column(f"+{k}", justify="right")
        by_cohort: dict[date, list[dict]] = {}
        for row in report.cohorts:
            by_cohort.setdefault(row["cohort_month"], []).append(row)
        for month, cells in by_cohort.items():
            size = cells[0]["cohort_size"]
            values = [percent(Decimal(x["active_users"]) / size) if size else "-" for x in cells]
            c.add_row(f"{month:%Y-%m}", str(size), *values, *[""] * (width - len(values)))
        console.print(c)

    e = Table(title=f"Events since {report.from_month:%Y-%m-%d}")
    e.add_column("event")
    e.add_column("count", justify="right")
    for row in report.events:
        e.add_row(row["event_name"], f"{row['events']:,}")
    console.print(e)


def main(url: str, months: int, as_json: bool, console) -> int:
    report = fetch(url, months)
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        render(report, console)
    return 0
