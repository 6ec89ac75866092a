"""`smsao-db cleanup`: the retention cleanup, or with --dry-run what it would delete.

The real run calls the procedure smsao.run_data_cleanup(), the same committing path as
the daily pg_cron job: each batch commits on its own, so an interrupted run keeps what it
finished and the app never waits on a long transaction."""
from __future__ import annotations

from psycopg import errors
from rich.console import Console
from rich.table import Table

from runner.db import connect, first_line
from runner.errors import UserError

LABELS = {
    "otp_codes": "expired OTP codes",
    "contact_import_jobs": "finished import jobs",
    "admin_audit_logs": "admin audit log",
    "pii_access_audit": "PII access audit",
    "function_call_audit": "function call audit",
}


def _not_installed() -> UserError:
    return UserError("the retention cleanup is not installed in this database: run `smsao-db migrate upgrade`")


def report(url: str) -> dict:
    """What a cleanup would delete now, per category (deletes nothing)."""
    with connect(url) as conn:
        try:
            return conn.execute("select public.production_data_cleanup_report()").fetchone()[0]
        except errors.UndefinedFunction:
            raise _not_installed() from None


def run(url: str, batch_size: int = 5000) -> dict:
    """Delete what the retention rules say, committing per batch; returns the report."""
    if batch_size < 1:
        raise UserError("--batch-size must be a positive integer")
    # CALL may COMMIT only outside a transaction block: autocommit.
    with connect(url, autocommit=True) as conn:
        try:
            return conn.execute("call smsao.run_data_cleanup(%s::integer)", [batch_size]).fetchone()[0]
        except errors.UndefinedFunction:
            raise _not_installed() from None
        except errors.InsufficientPrivilege as exc:
            raise UserError("the cleanup procedure smsao.run_data_cleanup() is for the database owner "
                            f"(pg_cron, a DBA): connect as the owner ({first_line(exc)})") from None


def render(result: dict, console: Console) -> None:
    dry_run = result.get("dry_run", False)
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False,
                  title="would delete (dry run)" if dry_run else "deleted", title_justify="left")
    table.add_column("category")
    table.add_column("rule", style="dim")
    table.add_column("rows", justify="right")
    categories = result.get("categories", {})
    rules = result.get("rules", {})
    for key, label in LABELS.items():
        table.add_row(label, rules.get(key, ""), f"{categories.get(key, 0):,}")
    table.add_row("[bold]total[/]", "", f"[bold]{result.get('total', 0):,}[/]")
    console.print(table)
    # Audit months past the retention go whole (a partition DROP, their rows counted above).
    months = result.get("partitions_to_drop" if dry_run else "partitions_dropped") or {}
    for key, label in LABELS.items():
        if months.get(key):
            verb = "would drop" if dry_run else "dropped"
            console.print(f"{label}: {verb} {len(months[key])} month partition(s): {', '.join(months[key])}")
    if not dry_run:
        console.print(f"[dim]{result.get('batches', 0)} batches, each committed on its own[/]")
