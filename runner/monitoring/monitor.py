"""`smsao-db monitor`: a live terminal view of the database's health.

Each refresh runs the health check live (`production_system_health_check()`, cheap: it
reads counters) and reads what pg_cron stored: the last snapshot's time, open alerts and
the last hour of `performance_samples` as a sparkline. Between refreshes it waits on
`LISTEN system_alerts`, so a new alert (a change of status recorded by pg_cron or by
anyone) redraws the view at once. `--once` prints one frame and exits with the health
exit code of runner.monitoring.health (0 healthy, 1 warning, 2 critical, 3 unknown).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg_pool import PoolTimeout
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runner.db import first_line, libpq_url, redact
from runner.errors import UserError
from runner.monitoring import health
from runner.monitoring.store import DashboardStore

BADGE_STYLES = {"healthy": "bold white on green4", "warning": "bold black on yellow3",
                "critical": "bold white on red3", "unknown": "bold white on grey42"}
SEVERITY_STYLES = {"warning": "yellow3", "critical": "red3", "recovered": "green4"}
LEVEL_STYLES = {"ok": "green4", "warning": "yellow3", "critical": "red3"}
SPARK = "▁▂▃▄▅▆▇█"
SPARK_MINUTES = 60


@dataclass
class Frame:
    """Everything one screen shows, read at `now`."""
    now: datetime
    report: dict | None = None
    error: str | None = None          # why there is no report (status unknown)
    snapshot_at: datetime | None = None
    alerts: list[dict] = field(default_factory=list)
    series: list[dict] = field(default_factory=list)
    sample: dict | None = None
    note: str | None = None           # e.g. "new alert received"

    @property
    def status(self) -> str:
        return (self.report or {}).get("system_status") or "unknown"

    @property
    def exit_code(self) -> int:
        return health.exit_code(self.report) if self.report else health.UNKNOWN


def collect(store: DashboardStore) -> Frame:
    frame = Frame(now=datetime.now(timezone.utc))
    try:
        frame.report = store.health_check()
    except psycopg.errors.UndefinedFunction:
        frame.error = "the health check is not installed in this database: run `smsao-db migrate upgrade`"
    except psycopg.errors.InsufficientPrivilege as exc:
        frame.error = f"not allowed to run the health check: {first_line(exc)}"
    except (psycopg.Error, PoolTimeout) as exc:
        frame.error = f"the health check failed: {first_line(exc)}"
    try:
        snap = store.latest_snapshot()
        frame.snapshot_at = snap["checked_at"] if snap else None
        frame.alerts = store.open_alerts(limit=10)
        frame.series = store.response_series(hours=1, bucket_minutes=1)
        frame.sample = store.latest_sample()
    except (psycopg.Error, PoolTimeout) as exc:
        frame.error = frame.error or f"cannot read the monitoring tables: {first_line(exc)}"
    return frame


def sparkline(values: list[float | None]) -> str:
    """One block character per value, scaled between the smallest and largest; gaps stay blank."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    lo, hi = min(present), max(present)
    span = (hi - lo) or 1.0
    return "".join(" " if v is None else SPARK[min(int((v - lo) / span * (len(SPARK) - 1) + 0.5), len(SPARK) - 1)]
                   for v in values)


def minute_values(series: list[dict], now: datetime, minutes: int = SPARK_MINUTES) -> list[float | None]:
    """The last `minutes` minutes, oldest first, one average per minute (None: no sample)."""
    start = (now - timedelta(minutes=minutes)).replace(second=0, microsecond=0)
    slots: list[float | None] = [None] * minutes
    for p in series:
        i = int((p["bucket"] - start).total_seconds() // 60) - 1
        if 0 <= i < minutes:
            slots[i] = p["avg_ms"]
    return slots


def _ago(ts: datetime | None, now: datetime) -> str:
    if ts is None:
        return "never"
    secs = max((now - ts).total_seconds(), 0)
    ago = f"{secs:.0f} s" if secs < 90 else f"{secs / 60:.0f} min" if secs < 5400 else f"{secs / 3600:.1f} h"
    return f"{ts.astimezone(timezone.utc):%H:%M:%S} UTC ({ago} ago)"


def render(frame: Frame, *, target: str = "", live: bool = False, interval: float = 0,
           listening: bool = False):
    now, status = frame.now, frame.status
    head = Text()
    head.append(f" {status.upper()} ", style=BADGE_STYLES.get(status, BADGE_STYLES["unknown"]))
    head.append("   live check ", style="dim")
    head.append(f"{now:%H:%M:%S} UTC")
    head.append("   ·   last stored snapshot ", style="dim")
    head.append(_ago(frame.snapshot_at, now))
    parts: list = [Panel(head, title="SMS AO database", subtitle=target or None, title_align="left",
                         subtitle_align="right", border_style=BADGE_STYLES.get(status, "").split(" on ")[-1] or None)]
    if frame.error:
        parts.append(Text(f"UNKNOWN: {frame.error}", style="bold red"))

    if frame.report:
        metrics, checks = frame.report.get("metrics") or {}, frame.report.get("checks") or {}
        thresholds = frame.report.get("thresholds") or {}
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        table.add_column("metric")
        table.add_column("value", justify="right")
        table.add_column("check")
        table.add_column("thresholds", style="dim")
        unknown = health.unknown_reasons(frame.report)
        keys = [k for k in health.METRICS if k in metrics] + sorted(k for k in metrics if k not in health.METRICS)
        for key in keys:
            label, check_key = health.METRICS.get(key, (key.replace("_", " "), key))
            level = checks.get(check_key or key, "")
            table.add_row(label, "unknown" if key in unknown else health.format_value(key, metrics.get(key)),
                          Text(level, style=LEVEL_STYLES.get(level, "")),
                          health.format_threshold(key, thresholds.get(check_key)) if check_key else "")
        lines = health.unknown_lines(frame.report)
        parts.append(Panel(Group(table, *(Text(line, style="dim") for line in lines)) if lines else table,
                           title="Metrics", title_align="left"))

    values = minute_values(frame.series, now)
    perf = Text()
    line = sparkline(values)
    if line:
        perf.append(line, style="cyan")
        present = [v for v in values if v is not None]
        perf.append(f"\nlatest {frame.sample['response_time_ms']:.1f} ms" if frame.sample else "\n")
        perf.append(f" · avg {sum(present) / len(present):.1f} ms · max {max(present):.1f} ms", style="dim")
        if frame.sample:
            perf.append(f" · error rate {frame.sample['error_rate']:.2%}",
                        style="red3" if frame.sample["error_rate"] else "dim")
    else:
        perf.append("no performance samples in the last hour (is `smsao-db schedule apply` done?)", style="dim")
    parts.append(Panel(perf, title=f"Response time, last {SPARK_MINUTES} min", title_align="left"))

    recs = (frame.report or {}).get("recommendations") or []
    rec_text = Text()
    for i, code in enumerate(recs):
        rec_text.append(("\n" if i else "") + "• ")
        rec_text.append(code, style="bold")
        rec_text.append(f": {health.RECOMMENDATIONS.get(code, '')}")
    if not recs:
        rec_text.append("none", style="dim")
    parts.append(Panel(rec_text, title="Recommendations", title_align="left"))

    if frame.alerts:
        alerts = Table(box=None, pad_edge=False, show_edge=False, show_header=False)
        alerts.add_column("severity")
        alerts.add_column("when", style="dim", no_wrap=True)
        alerts.add_column("message")
        for a in frame.alerts:
            alerts.add_row(Text(a["severity"].upper(), style=f"bold {SEVERITY_STYLES.get(a['severity'], '')}"),
                           _ago(a["created_at"], now), a["message"])
        body = alerts
    else:
        body = Text("none", style="dim")
    parts.append(Panel(body, title=f"Open alerts ({len(frame.alerts)})", title_align="left"))

    if live:
        foot = Text(f"refresh every {interval:g} s · ", style="dim")
        foot.append("listening for system_alerts" if listening else "not listening (reconnecting)",
                    style="dim" if listening else "yellow3")
        foot.append(" · Ctrl-C quits", style="dim")
        if frame.note:
            foot.append(f" · {frame.note}", style="bold")
        parts.append(foot)
    return Group(*parts)


def open_store(url: str) -> DashboardStore:
    try:
        return DashboardStore(url, pool_size=2).open()
    except UserError as exc:
        raise health.HealthUnknown(str(exc)) from None  # Nagios: unknown, not a plain error


def once(url: str, console: Console) -> int:
    store = open_store(url)
    try:
        frame = collect(store)
    finally:
        store.close()
    console.print(render(frame, target=redact(url)))
    return frame.exit_code


class AlertListener:
    """LISTEN system_alerts on its own connection; reconnects when it drops."""

    def __init__(self, url: str):
        self.url = url
        self.conn: psycopg.Connection | None = None

    @property
    def listening(self) -> bool:
        return self.conn is not None and not self.conn.closed

    def wait(self, timeout: float) -> list[str]:
        """Payloads of alerts that arrive within `timeout` seconds (returns at the first)."""
        if not self.listening:
            try:
                self.conn = psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=5)
                self.conn.execute("listen system_alerts")
            except psycopg.Error:
                self.conn = None
                time.sleep(timeout)
                return []
        try:
            return [n.payload for n in self.conn.notifies(timeout=timeout, stop_after=1)]
        except psycopg.Error:
            self.close()
            return []

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None


def frames(store: DashboardStore, listener: AlertListener, interval: float):
    """Frames forever: one every `interval` seconds, or at once when an alert arrives."""
    while True:
        payloads = listener.wait(interval)
        frame = collect(store)
        if payloads:
            frame.note = f"new alert at {frame.now:%H:%M:%S} UTC"
        yield frame


def run(url: str, console: Console, interval: float = 5.0) -> None:
    from rich.live import Live

    store = open_store(url)
    listener = AlertListener(url)
    target = redact(url)
    try:
        first = collect(store)
        with Live(render(first, target=target, live=True, interval=interval, listening=False),
                  console=console, auto_refresh=False, screen=False) as live:
            for frame in frames(store, listener, interval):
                live.update(render(frame, target=target, live=True, interval=interval,
                                   listening=listener.listening), refresh=True)
    finally:
        listener.close()
        store.close()
