"""`smsao-db`: a thin runner over what the database exposes."""
from __future__ import annotations

import json
import os
import sys
from typing import Annotated, Optional

import psycopg
import sqlalchemy.exc
import typer
from rich.console import Console

from runner import cleanup as retention, demo, health as healthcheck, migrate as migrations, schedule as cron
from runner.db import connect, explain_connection_error
from runner.embedded import Cluster
from runner.errors import UserError

app = typer.Typer(help="SMS AO production database runner.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
# soft_wrap: Rich would otherwise break lines at the terminal width (80 columns when
# piped), turning a one-line error into several and splitting URLs.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DatabaseUrl = Annotated[Optional[str], typer.Option(
    "--database-url", envvar="DATABASE_URL", show_envvar=True,
    help="PostgreSQL URL; without it the embedded database is used.")]


def resolve_url(database_url: str | None) -> str:
    if database_url:
        return database_url
    cluster = Cluster()
    if cluster.running:
        return cluster.url()
    raise UserError("no DATABASE_URL given and the embedded database is not running: "
                    "run `smsao-db up` or set DATABASE_URL")


@app.command()
def up(demo_data: Annotated[bool, typer.Option("--demo", help="Load demo data.")] = False,
       backup_repo: Annotated[Optional[str], typer.Option(
           "--backup-repo", envvar="SMSAO_BACKUP_REPO", show_envvar=True,
           help="pgBackRest repository (default: backup/ in the data home).")] = None) -> None:
    """Start the embedded PostgreSQL (init on first use), migrate, optionally load demo data."""
    if os.environ.get("DATABASE_URL"):
        raise UserError("`up` manages the embedded database; DATABASE_URL is set, "
                        "so use `smsao-db migrate upgrade` for that server instead")
    cluster = Cluster()
    cluster.start()
    url = cluster.url()
    with connect(cluster.url("postgres"), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'smsao'").fetchone():
            conn.execute("create database smsao")
    with connect(url, autocommit=True) as conn:
        conn.execute("create extension if not exists pg_cron")
    migrations.run("upgrade", url, "head")
    if demo_data:
        loaded = demo.load(url)
        console.print("demo data loaded" if loaded else "demo data already present")
    try:
        applied = cron.apply(url)
        changed = sum(1 for _, action, _ in applied if action != "unchanged")
        console.print(f"pg_cron: {len(applied)} jobs scheduled ({changed} created or updated)")
    except UserError as exc:
        err_console.print(f"[yellow]warning:[/yellow] {exc}", highlight=False)
    from runner import recovery_cli

    url = recovery_cli.after_up(cluster, backup_repo)  # pgBackRest + WAL archiving (may restart)
    console.print(f"[green]embedded database ready[/green]: {url}")


@app.command()
def down() -> None:
    """Stop the embedded PostgreSQL (its data stays in .smsao/)."""
    from runner import recovery_cli

    recovery_cli.before_down()  # archive the newest WAL first
    stopped = Cluster().stop()
    console.print("embedded database stopped" if stopped else "embedded database was not running")


@app.command()
def migrate(
    action: Annotated[str, typer.Argument(help="upgrade | downgrade | current | history")] = "upgrade",
    revision: Annotated[Optional[str], typer.Argument(help="target revision (upgrade: head)")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Apply or inspect migrations (Alembic), one runner at a time."""
    url = None if action == "history" else resolve_url(database_url)
    migrations.run(action, url or "", revision)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8765,
    token: Annotated[Optional[str], typer.Option(
        envvar="SMSAO_DASHBOARD_TOKEN", show_envvar=True,
        help="Require this token on every request (Authorization: Bearer, ?token=, or the cookie).")] = None,
    refresh: Annotated[int, typer.Option(help="Seconds between automatic page refreshes (0: off).")] = 30,
    database_url: DatabaseUrl = None,
) -> None:
    """Admin web dashboard, /api/health and Prometheus /metrics (localhost by default)."""
    from runner import web

    url = resolve_url(database_url)

    def ready(server) -> None:
        hint = " (send the token: Authorization: Bearer ... or ?token=...)" if token else ""
        console.print(f"dashboard on [bold]{server.url}/[/bold], metrics on {server.url}/metrics{hint}; "
                      "Ctrl-C stops", highlight=False)

    web.serve(url, host=host, port=port, token=token, refresh_seconds=refresh, on_ready=ready)


@app.command()
def monitor(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit with the health exit code.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes (an alert redraws at once).")] = 5.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Live terminal view: status, metrics, alerts, response time. Exit 0/1/2/3 with --once."""
    from runner import monitor as live_view

    url = resolve_url(database_url)
    if once:
        raise typer.Exit(live_view.once(url, console))
    if interval <= 0:
        raise UserError("--interval must be a positive number of seconds")
    live_view.run(url, console, interval)


@app.command()
def verify(
    only: Annotated[Optional[str], typer.Option(
        help="Run only these areas, comma-separated: identity, rls, grants, rate limit, session, audit, "
             "health, cleanup.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Assert the contract against a database in one transaction that is rolled back (exit 0: all pass)."""
    import json as json_module

    from runner import verify as verifier

    results = verifier.verify(resolve_url(database_url), only)
    if as_json:
        print(json_module.dumps([r.__dict__ for r in results], indent=2))
    else:
        verifier.render(results, Console(width=max(console.width, 140)))
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command()
def health(json_output: JsonFlag = False, database_url: DatabaseUrl = None) -> None:
    """Run the health check. Exit 0 healthy, 1 warning, 2 critical, 3 unknown (Nagios)."""
    try:
        report = healthcheck.fetch(resolve_url(database_url))
    except UserError as exc:
        if json_output:
            print(json.dumps({"system_status": "unknown", "error": str(exc)}))
        raise healthcheck.HealthUnknown(str(exc)) from None
    if json_output:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        healthcheck.render(report, console)
    raise typer.Exit(healthcheck.exit_code(report))


@app.command()
def cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
    json_output: JsonFlag = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per committed batch.")] = 5000,
    database_url: DatabaseUrl = None,
) -> None:
    """Retention cleanup: expired OTPs, old audit rows, finished import jobs (per-category counts)."""
    url = resolve_url(database_url)
    result = retention.report(url) if dry_run else retention.run(url, batch_size)
    if json_output:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        retention.render(result, console)


@app.command()
def schedule(
    action: Annotated[str, typer.Argument(help="apply | list | status | remove")] = "list",
    database_url: DatabaseUrl = None,
) -> None:
    """The pg_cron jobs: apply them (idempotent), list, show last runs and failures, remove."""
    if action not in ("apply", "list", "status", "remove"):
        raise UserError(f"unknown schedule action '{action}': use apply, list, status or remove")
    url = resolve_url(database_url)
    try:
        if action == "apply":
            for name, what, database in cron.apply(url):
                console.print(f"{name}: {what} (runs in database '{database}')", highlight=False)
        elif action == "remove":
            removed = cron.remove(url)
            console.print(f"removed {len(removed)} jobs" + (f": {', '.join(removed)}" if removed else ""))
        else:
            jobs = cron.status(url)
            cron.render_jobs(jobs, console, with_runs=action == "status")
            if action == "status" and any(j.problem for j in jobs):
                raise typer.Exit(1)
    except cron.NoCron as exc:
        if action in ("apply", "status"):
            raise
        console.print(str(exc), highlight=False)


# -- recovery (issue 12): the logic lives in runner/backup.py, drill.py, integrity.py,
# upgrade_check.py; each command imports its module when it runs.
RepoOption = Annotated[Optional[str], typer.Option(
    "--repo", help="Backup repository to read (default: the one `up` configured, or backup/ in the data home).")]


@app.command()
def backup(
    full: Annotated[bool, typer.Option("--full", help="A full backup even when an incremental one would do.")] = False,
    repo: RepoOption = None,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Back up: embedded database, pgBackRest (full, then incremental; WAL archived continuously);
    a server given by URL, a logical pg_dump of the package's schemas."""
    from runner import recovery_cli

    recovery_cli.backup(database_url, repo, full, json_output)


@app.command()
def restore(
    to: Annotated[str, typer.Option("--to", help="New (or empty) directory for the restored cluster.")],
    target_time: Annotated[Optional[str], typer.Option(
        "--target-time", help="Point in time to recover to (ISO 8601; UTC when no zone is given).")] = None,
    repo: RepoOption = None,
    dump: Annotated[Optional[str], typer.Option("--dump", help="A logical backup file to restore.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Restore the latest backup, or the state at --target-time, into a new data directory."""
    from runner import recovery_cli

    recovery_cli.restore(database_url, to, target_time, repo, dump)


@app.command()
def drill(
    repo: RepoOption = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the scratch cluster on disk (stopped).")] = False,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Restore drill: latest backup into a scratch cluster, verify + integrity there, row counts,
    RPO and RTO. Exit 0 only if nothing committed before the backup's end is missing."""
    from runner import recovery_cli

    raise typer.Exit(recovery_cli.drill(database_url, repo, keep, json_output))


@app.command()
def integrity(json_output: JsonFlag = False, database_url: DatabaseUrl = None) -> None:
    """Invariants a restore or a bug could break: balances = ledger, counters = recount, orphans
    accounted, indexes sound (amcheck). Exit 0 only when all hold."""
    from runner import recovery_cli

    raise typer.Exit(recovery_cli.integrity(resolve_url(database_url), json_output))


@app.command("upgrade-check")
def upgrade_check(
    to_bin: Annotated[str, typer.Option("--to-bin", help="bin directory of the newer PostgreSQL.")],
    keep: Annotated[bool, typer.Option("--keep", help="Leave the upgraded copy on disk (stopped).")] = False,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
) -> None:
    """Major-version upgrade rehearsal on a copy: pg_upgrade with the binaries in --to-bin,
    start, verify, integrity; extensions the new binaries lack are dropped on the copy and named."""
    from runner import recovery_cli

    raise typer.Exit(recovery_cli.upgrade_check(resolve_url(database_url), to_bin, keep, json_output))


def main() -> None:
    """Console entry point: errors a user can cause print one line and exit non-zero."""
    try:
        app()
    except UserError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except psycopg.OperationalError as exc:
        err_console.print(f"[red]error:[/red] {explain_connection_error('the database', exc)}", highlight=False)
        sys.exit(1)
    except (psycopg.Error, sqlalchemy.exc.DBAPIError) as exc:
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        err_console.print(f"[red]error:[/red] database refused the operation: {first}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
