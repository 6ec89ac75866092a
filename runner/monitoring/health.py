"""`smsao-db health`: runs public.production_system_health_check() and reports it for
people (a coloured summary) or machines (--json), with Nagios exit codes."""
from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg
from psycopg import errors

from runner.db import connect, first_line
from runner.errors import UserError
from runner.monitoring.store import act_as_service_role

if TYPE_CHECKING:
    from rich.console import Console

# Nagios plugin convention.
EXIT_CODES = {"healthy": 0, "warning": 1, "critical": 2}
UNKNOWN = 3
COLOURS = {"healthy": "green", "ok": "green", "warning": "yellow", "critical": "red"}

# Metric key -> (label, threshold key in the report's "checks"/"thresholds").
METRICS = {
    "total_users": ("Users", None),
    "active_sms_configs": ("Active SMS gateways", "active_sms_configs"),
    "pending_credit_requests": ("Pending credit requests", "pending_credit_requests"),
    "failed_sms_24h": ("Failed SMS (24 h)", "failed_sms_24h"),
    "sms_failure_rate": ("SMS failure rate", "sms_failure_rate"),
    "orphaned_data": ("Orphaned rows", "orphaned_data"),
    # Engine
    "longest_transaction_s": ("Longest transaction", "longest_transaction_s"),
    "connection_usage": ("Connections in use", "connection_usage"),
    "xid_age_ratio": ("XID age (of wraparound)", "xid_age_ratio"),
    "blocked_sessions": ("Sessions blocked on locks", "blocked_sessions"),
    "database_size_bytes": ("Database size", "database_size_bytes"),
    # Scheduler and security
    "health_snapshot_age_s": ("Newest health snapshot", "health_snapshot_age_s"),
    "cron_failures_1h": ("Failed job runs (1 h)", "cron_failures_1h"),
    "security_refusals_1h": ("Refused calls (1 h)", "security_refusals_1h"),
    # Recovery
    "backup_age_s": ("Newest backup", "backup_age_s"),
    "restore_drill_age_s": ("Newest restore drill", "restore_drill_age_s"),
    "wal_archive_failing": ("WAL segments failing to archive", "wal_archive_failing"),
    # Replication (null on a single server)
    "replication_standbys": ("Streaming standbys", "replication_standbys"),
    "replication_lag_bytes": ("Replication lag", "replication_lag_bytes"),
    "replication_lag_s": ("Replication lag (time)", "replication_lag_s"),
}
RATIOS = ("sms_failure_rate", "connection_usage", "xid_age_ratio")
SECONDS = ("longest_transaction_s", "health_snapshot_age_s", "backup_age_s", "restore_drill_age_s",
           "replication_lag_s")
RUNBOOK = "docs/runbooks/health.md"

RECOMMENDATIONS = {
    "configure_sms_gateway": "no active SMS gateway: activate one in sms_configurations, nothing can be sent",
    "investigate_failed_sms": "many SMS are failing: check the gateway and sms_logs.error_message",
    "review_pending_credit_requests": "credit requests are waiting for an admin",
    "cleanup_orphaned_data": "sms_logs / otp_codes rows belong to deleted users: review and archive them",
    "investigate_long_transactions": "a transaction has been open too long: it holds back vacuum and may hold locks",
    "review_connection_pooling": "connections are near max_connections: pool them (PgBouncer, Supavisor)",
    "vacuum_freeze": "transaction IDs are ageing towards wraparound: VACUUM (FREEZE) the oldest tables",
    "investigate_lock_waits": "sessions are waiting on locks held by others past the grace",
    "check_scheduler": "the pg_cron jobs stopped storing snapshots or their runs fail",
    "investigate_refusals": "many critical calls were refused in the last hour: a brute-force wave or a broken client",
    "check_wal_archiving": "WAL archiving is failing: pg_wal grows until the disk is full, and point-in-time "
                           "recovery stops at the last archived segment",
    "take_backup": "no successful backup for over a day: run `smsao-db backup` and find why the daily one failed",
    "run_restore_drill": "no successful restore drill for over a week: run `smsao-db drill`",
    "check_replication": "a standby is missing or lagging: writes may block or not be safe; see `smsao-db ha status`",
}


class HealthUnknown(UserError):
    """The health could not be determined (Nagios UNKNOWN)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=UNKNOWN)


def fetch(url: str) -> dict:
    """The health report, or HealthUnknown saying why there is none."""
    try:
        conn = connect(url)
    except UserError as exc:
        raise HealthUnknown(str(exc)) from None
    with conn:
        try:
            act_as_service_role(conn)
            return conn.execute("select public.production_system_health_check()").fetchone()[0]
        except errors.UndefinedFunction:
            raise HealthUnknown("the health check is not installed in this database: "
                                "run `smsao-db migrate upgrade`") from None
        except errors.InsufficientPrivilege as exc:
            raise HealthUnknown(f"not allowed to run the health check: {first_line(exc)}") from None
        except psycopg.Error as exc:
            raise HealthUnknown(f"the health check failed: {first_line(exc)}") from None


def exit_code(report: dict) -> int:
    return EXIT_CODES.get(report.get("system_status"), UNKNOWN)


def format_value(key: str, value) -> str:
    if value is None:
        return "-"
    if key in RATIOS:
        return f"{float(value):.2%}"
    if key in SECONDS:
        return f"{float(value):,.0f} s"
    if key in ("database_size_bytes", "replication_lag_bytes"):
        return f"{value / 2**20:,.1f} MiB"
    return f"{value:,}" if isinstance(value, int) else str(value)


def unknown_reasons(report: dict) -> dict[str, str]:
    """Why each null metric could not be measured, where the report says (details.unknown)."""
    metrics = report.get("metrics") or {}
    reasons = (report.get("details") or {}).get("unknown") or {}
    return {key: str(why) for key, why in reasons.items() if metrics.get(key) is None}


def unknown_lines(report: dict) -> list[str]:
    """One line per reason: the metrics it leaves unknown, and why."""
    by_reason: dict[str, list[str]] = {}
    for key, why in unknown_reasons(report).items():
        by_reason.setdefault(why, []).append(METRICS.get(key, (key.replace("_", " "),))[0])
    return [f"{', '.join(labels)}: unknown, {why}" for why, labels in by_reason.items()]


def format_threshold(key: str, limits: dict | None) -> str:
    if key == "active_sms_configs":
        return "critical below 1"
    if key == "replication_standbys" and limits:  # its thresholds count the missing standbys
        return f"warning when {limits.get('warning_at')} expected standby is missing"
    if not limits:
        return ""
    parts = []
    for level in ("warning_at", "critical_at"):
        if limits.get(level) is not None:
            parts.append(f"{level.split('_')[0]} ≥ {format_value(key, limits[level])}")
    if limits.get("min_sample"):
        parts.append(f"min {limits['min_sample']:,} SMS")
    if limits.get("grace_s") is not None:
        parts.append(f"waiting > {format_value('longest_transaction_s', limits['grace_s'])}")
    return ", ".join(parts)


def render(report: dict, console: Console) -> None:
    from rich.table import Table

    status = report.get("system_status", "unknown")
    colour = COLOURS.get(status, "magenta")
    console.print(f"SMS AO health: [bold {colour}]{status.upper()}[/]  "
                  f"[dim]({report.get('timestamp', '')})[/]")
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("check")
    table.add_column("thresholds", style="dim")
    metrics = report.get("metrics", {})
    checks = report.get("checks", {})
    thresholds = report.get("thresholds", {})
    unknown = unknown_reasons(report)
    for key, (label, check_key) in METRICS.items():
        level = checks.get(check_key, "") if check_key else ""
        table.add_row(label, "unknown" if key in unknown else format_value(key, metrics.get(key)),
                      f"[{COLOURS.get(level, 'white')}]{level}[/]" if level else "",
                      format_threshold(key, thresholds.get(check_key)) if check_key else "")
    console.print(table)
    for line in unknown_lines(report):
        console.print(f"[dim]{line}[/]", highlight=False)
    orphans = report.get("details", {}).get("orphaned_data")
    if orphans and metrics.get("orphaned_data"):
        console.print(f"[dim]orphaned rows: {orphans.get('sms_logs', 0):,} sms_logs, "
                      f"{orphans.get('otp_codes', 0):,} otp_codes (owner profile gone)[/]")
    recommendations = report.get("recommendations") or []
    if recommendations:
        console.print("[bold]Recommendations[/]")
        for code in recommendations:
            console.print(f"  • [bold]{code}[/]: {RECOMMENDATIONS.get(code, '')} [dim]({RUNBOOK}#{code})[/]")
    else:
        console.print("[dim]no recommendations[/]")
