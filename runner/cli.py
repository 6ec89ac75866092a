"""`smsao-db`: a thin runner over what the database exposes.

Start-up is paid on every call (a monitoring system runs `health` every minute), so only
Typer is imported here at module level: each command imports what it uses (psycopg,
Alembic and SQLAlchemy, Rich, the web stack) when it runs.

Global options (`--database-url`, `-v`) are accepted before the command (the callback)
and after it (each command's own option); the one given after the command wins, then the
one before it, then DATABASE_URL."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from runner.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

# rich_markup_mode=None: plain help and usage errors; Rich's help renderer alone costs
# ~100 ms of imports (markdown, syntax highlighting) on every `--help`.
app = typer.Typer(help="SMS AO production database runner.", no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_enable=False, add_completion=False)


class Options:
    """The global database URL, as the callback saw it (before the command, or DATABASE_URL);
    -v lives in the logging filter (_quiet)."""
    database_url: str | None = None


GLOBAL = Options()

DatabaseUrl = Annotated[Optional[str], typer.Option(
    "--database-url", metavar="URL",
    help="PostgreSQL URL (default: DATABASE_URL, else the embedded database); also before the command.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Show Alembic's details too.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def global_options(
    database_url: Annotated[Optional[str], typer.Option(
        "--database-url", metavar="URL", envvar="DATABASE_URL", show_envvar=True,
        help="PostgreSQL URL; without it the embedded database is used.")] = None,
    verbose: Verbose = False,
) -> None:
    """SMS AO production database runner."""
    GLOBAL.database_url = database_url
    configure_logging(verbose)


# -- output and logging ---------------------------------------------------------------------
_consoles: dict[str, Console] = {}


def console(stderr: bool = False) -> Console:
    """Rich consoles, made on first use. soft_wrap: Rich would otherwise break lines at the
    terminal width (80 columns when piped), turning a one-line error into several."""
    key = "err" if stderr else "out"
    if key not in _consoles:
        from rich.console import Console

        _consoles[key] = Console(stderr=stderr, soft_wrap=True)
    return _consoles[key]


class _QuietAlembic:
    """Unless -v, Alembic says only which revisions ran ("Running upgrade ...") and warns;
    its set-up chatter ("Context impl ...", "Will assume ...", plugins) is dropped."""
    verbose = False

    def filter(self, record) -> bool:
        return self.verbose or record.levelno >= 30 or record.getMessage().startswith("Running ")


_quiet = _QuietAlembic()


def configure_logging(verbose: bool) -> None:
    """Alembic's INFO lines and the runner's warnings go to stderr as bare messages."""
    import logging

    _quiet.verbose = _quiet.verbose or verbose
    for name, level in (("alembic", logging.INFO), ("runner", logging.DEBUG if _quiet.verbose else logging.INFO)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(f is _quiet for h in logger.handlers for f in h.filters):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.addFilter(_quiet)
            logger.addHandler(handler)
            logger.propagate = False


def use_verbose(verbose: bool) -> None:
    if verbose:
        configure_logging(True)


def options(database_url: str | None, verbose: bool) -> str:
    """Applies a command's own options over the global ones; returns the database URL."""
    use_verbose(verbose)
    return resolve_url(database_url)


def resolve_url(database_url: str | None = None) -> str:
    url = database_url or GLOBAL.database_url
    if url:
        return url
    from runner.embedded import Cluster

    cluster = Cluster()
    if cluster.running:
        return cluster.url()
    raise UserError("no DATABASE_URL given and the embedded database is not running: "
                    "run `smsao-db up` or set DATABASE_URL")


# -- the embedded database ------------------------------------------------------------------
@app.command()
def up(demo_data: Annotated[bool, typer.Option("--demo", help="Load demo data and 24 h of history.")] = False,
       backup_repo: Annotated[Optional[str], typer.Option(
           "--backup-repo", metavar="DIR", envvar="SMSAO_BACKUP_REPO", show_envvar=True,
           help="pgBackRest repository (default: backup/ in the data home).")] = None,
       verbose: Verbose = False) -> None:
    """Start the embedded PostgreSQL (init on first use), migrate, record a first health check."""
    from runner import demo, health, migrate, schedule
    from runner.db import connect, redact
    from runner.embedded import Cluster

    if GLOBAL.database_url:
        raise UserError("`up` manages the embedded database; a database URL is given (DATABASE_URL or "
                        "--database-url), so use `smsao-db migrate upgrade` for that server instead")
    use_verbose(verbose)
    cluster = Cluster()
    cluster.start()
    url = cluster.url()
    with connect(cluster.url("postgres"), autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = 'smsao'").fetchone():
            conn.execute("create database smsao")
    migrate.run("upgrade", url, "head")
    if demo_data:
        loaded = demo.load(url)
        console().print("demo data loaded" if loaded else "demo data already present")
    health.record_first_look(url)
    try:
        applied = schedule.apply(url)
        changed = sum(1 for _, action, _ in applied if action != "unchanged")
        console().print(f"pg_cron: {len(applied)} jobs scheduled ({changed} created or updated)")
    except UserError as exc:
        console(stderr=True).print(f"[yellow]warning:[/yellow] {exc}", highlight=False)
    from runner import recovery_cli

    url = recovery_cli.after_up(cluster, backup_repo)  # pgBackRest + WAL archiving (may restart)
    console().print(f"[green]embedded database ready[/green]: {redact(url)} "
                    "(`smsao-db url` prints it with the password)", highlight=False)


@app.command()
def down(verbose: Verbose = False) -> None:
    """Stop the embedded PostgreSQL (its data stays in .smsao/)."""
    from runner import recovery_cli
    from runner.embedded import Cluster

    use_verbose(verbose)
    recovery_cli.before_down()  # archive the newest WAL first
    stopped = Cluster().stop()
    console().print("embedded database stopped" if stopped else "embedded database was not running")


@app.command()
def url(dbname: Annotated[str, typer.Option(help="Database name in the URL.")] = "smsao",
        verbose: Verbose = False) -> None:
    """Print the embedded database's URL, password included (for psql and apps)."""
    from runner.embedded import Cluster

    cluster = Cluster()
    if not cluster.running:
        raise UserError(f"the embedded database in {cluster.home} is not running: run `smsao-db up`")
    print(cluster.url(dbname))


# -- migrations and schedules ---------------------------------------------------------------
@app.command()
def migrate(
    action: Annotated[str, typer.Argument(help="upgrade | downgrade | current | history")] = "upgrade",
    revision: Annotated[Optional[str], typer.Argument(help="target revision (upgrade: head)")] = None,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Apply or inspect migrations (Alembic), one runner at a time."""
    from runner import migrate as migrations

    use_verbose(verbose)
    target = "" if action == "history" else resolve_url(database_url)
    unscheduled = migrations.run(action, target, revision)
    if unscheduled:
        console().print(f"pg_cron: removed {len(unscheduled)} jobs whose functions are gone: "
                        f"{', '.join(unscheduled)}", highlight=False)


@app.command()
def schedule(
    action: Annotated[str, typer.Argument(help="apply | list | status | remove")] = "list",
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """The pg_cron jobs: apply them (idempotent; creates pg_cron if needed), list, show last runs, remove."""
    if action not in ("apply", "list", "status", "remove"):
        raise UserError(f"unknown schedule action '{action}': use apply, list, status or remove")
    from runner import schedule as cron

    target = options(database_url, verbose)
    out = console()
    try:
        if action == "apply":
            for name, what, database in cron.apply(target):
                out.print(f"{name}: {what} (runs in database '{database}')", highlight=False)
        elif action == "remove":
            removed = cron.remove(target)
            out.print(f"removed {len(removed)} jobs" + (f": {', '.join(removed)}" if removed else ""))
        else:
            jobs = cron.status(target)
            cron.render_jobs(jobs, out, with_runs=action == "status")
            if action == "status" and any(j.problem for j in jobs):
                raise typer.Exit(1)
    except cron.NoCron as exc:
        if action in ("apply", "status"):
            raise
        out.print(str(exc), highlight=False)


# -- health and operations ------------------------------------------------------------------
@app.command()
def health(json_output: JsonFlag = False, database_url: DatabaseUrl = None, verbose: Verbose = False) -> None:
    """Run the health check. Exit 0 healthy, 1 warning, 2 critical, 3 unknown (Nagios)."""
    import json

    from runner import health as healthcheck

    try:
        report = healthcheck.fetch(options(database_url, verbose))
    except UserError as exc:
        if json_output:
            print(json.dumps({"system_status": "unknown", "error": str(exc)}))
        raise healthcheck.HealthUnknown(str(exc)) from None
    if json_output:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        healthcheck.render(report, console())
    raise typer.Exit(healthcheck.exit_code(report))


@app.command()
def cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
    json_output: JsonFlag = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per committed batch.")] = 5000,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Retention cleanup: expired OTPs, old audit rows, finished import jobs (per-category counts)."""
    import json

    from runner import cleanup as retention

    target = options(database_url, verbose)
    result = retention.report(target) if dry_run else retention.run(target, batch_size)
    if json_output:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        retention.render(result, console())


@app.command()
def monitor(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit with the health exit code.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes (an alert redraws at once).")] = 5.0,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Live terminal view: status, metrics, alerts, response time. Exit 0/1/2/3 with --once."""
    from runner import monitor as live_view

    target = options(database_url, verbose)
    if once:
        raise typer.Exit(live_view.once(target, console()))
    if interval <= 0:
        raise UserError("--interval must be a positive number of seconds")
    live_view.run(target, console(), interval)


@app.command()
def verify(
    only: Annotated[Optional[str], typer.Option(
        help="Run only these areas, comma-separated: identity, rls, grants, rate limit, session, audit, "
             "health, cleanup.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Assert the contract against a database in one transaction that is rolled back (exit 0: all pass)."""
    import json

    from rich.console import Console

    from runner import verify as verifier

    results = verifier.verify(options(database_url, verbose), only)
    if as_json:
        print(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        verifier.render(results, Console(width=max(console().width, 140)))
    raise typer.Exit(0 if all(r.passed for r in results) else 1)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 8765,
    token: Annotated[Optional[str], typer.Option(
        envvar="SMSAO_DASHBOARD_TOKEN", show_envvar=True,
        help="Require this token on every request (Authorization: Bearer, ?token=, or the cookie).")] = None,
    refresh: Annotated[int, typer.Option(help="Seconds between automatic page refreshes (0: off).")] = 30,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Admin web dashboard, /api/health and Prometheus /metrics (localhost by default)."""
    from runner import web

    target = options(database_url, verbose)

    def ready(server) -> None:
        hint = " (send the token: Authorization: Bearer ... or ?token=...)" if token else ""
        console().print(f"dashboard on [bold]{server.url}/[/bold], metrics on {server.url}/metrics{hint}; "
                        "Ctrl-C stops", highlight=False)

    web.serve(target, host=host, port=port, token=token, refresh_seconds=refresh, on_ready=ready)


# -- analytics (issue 18): the logic lives in runner/analytics/.
analytics_app = typer.Typer(help="Business analytics: revenue, customers, funnels, cohorts; GA4 export.",
                            no_args_is_help=True, rich_markup_mode=None)
app.add_typer(analytics_app, name="analytics")


@analytics_app.command("report")
def analytics_report(
    months: Annotated[int, typer.Option(help="How many months, the current one included.")] = 12,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Revenue, MRR, paying/new/churned customers, ARPPU, CAC, LTV per month; the default
    funnel; retention cohorts; event counts."""
    from runner.analytics import report

    raise typer.Exit(report.main(options(database_url, verbose), months, json_output, console()))


@analytics_app.command("export")
def analytics_export(
    ga4: Annotated[bool, typer.Option("--ga4", help="Send to Google Analytics 4 (Measurement Protocol).")] = False,
    measurement_id: Annotated[Optional[str], typer.Option(
        envvar="SMSAO_GA4_MEASUREMENT_ID", show_envvar=True, help="The GA4 stream's measurement id (G-...).")] = None,
    api_secret: Annotated[Optional[str], typer.Option(
        envvar="SMSAO_GA4_API_SECRET", show_envvar=True, help="The stream's Measurement Protocol API secret.")] = None,
    validate: Annotated[bool, typer.Option(
        "--validate", help="Check one batch with /debug/mp/collect; nothing is recorded or marked sent.")] = False,
    endpoint: Annotated[str, typer.Option(help="Scheme and host of the collection endpoint.")] =
        "https://www.google-analytics.com",
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Send the queued events an admin opted in to (public.set_ga4_export), each once."""
    import json
    from dataclasses import asdict

    from runner.analytics import ga4 as exporter

    if not ga4:
        raise UserError("say where to export: --ga4 (the only destination so far)")
    result = exporter.export(options(database_url, verbose), measurement_id, api_secret,
                             endpoint=endpoint, validate=validate)
    if json_output:
        print(json.dumps(asdict(result)))
    elif validate:
        problems = result.validation_messages
        console().print(f"validated {result.events} event(s): " +
                        ("GA4 accepts them" if not problems else f"{len(problems)} problem(s): {problems}"),
                        highlight=False)
    else:
        console().print(f"sent {result.events} event(s) in {result.batches} request(s)"
                        f"{f' ({result.retries} retried)' if result.retries else ''}", highlight=False)
    raise typer.Exit(1 if validate and result.validation_messages else 0)


# -- recovery (issue 12): the logic lives in runner/backup.py, drill.py, integrity.py and
# upgrade_check.py, reached through runner/recovery_cli.py when the command runs.
RepoOption = Annotated[Optional[str], typer.Option(
    "--repo", metavar="DIR",
    help="Backup repository to read (default: the one `up` configured, or backup/ in the data home).")]


@app.command()
def backup(
    full: Annotated[bool, typer.Option("--full", help="A full backup even when an incremental one would do.")] = False,
    repo: RepoOption = None,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Back up: embedded database, pgBackRest (full, then incremental; WAL archived continuously);
    a server given by URL, a logical pg_dump of the package's schemas."""
    from runner import recovery_cli

    use_verbose(verbose)
    recovery_cli.backup(database_url, repo, full, json_output)


@app.command()
def restore(
    to: Annotated[str, typer.Option("--to", metavar="DIR", help="New (or empty) directory for the restored cluster.")],
    target_time: Annotated[Optional[str], typer.Option(
        "--target-time", metavar="TS", help="Point in time to recover to (ISO 8601; UTC when no zone is given).")] = None,
    repo: RepoOption = None,
    dump: Annotated[Optional[str], typer.Option("--dump", metavar="FILE", help="A logical backup file to restore.")] = None,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Restore the latest backup, or the state at --target-time, into a new data directory."""
    from runner import recovery_cli

    use_verbose(verbose)
    recovery_cli.restore(database_url, to, target_time, repo, dump)


@app.command()
def drill(
    repo: RepoOption = None,
    keep: Annotated[bool, typer.Option("--keep", help="Leave the scratch cluster on disk (stopped).")] = False,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Restore drill: latest backup into a scratch cluster, verify + integrity there, row counts,
    RPO and RTO. Exit 0 only if nothing committed before the backup's end is missing."""
    from runner import recovery_cli

    use_verbose(verbose)
    raise typer.Exit(recovery_cli.drill(database_url, repo, keep, json_output))


@app.command()
def integrity(json_output: JsonFlag = False, database_url: DatabaseUrl = None, verbose: Verbose = False) -> None:
    """Invariants a restore or a bug could break: balances = ledger, counters = recount, orphans
    accounted, indexes sound (amcheck). Exit 0 only when all hold."""
    from runner import recovery_cli

    raise typer.Exit(recovery_cli.integrity(options(database_url, verbose), json_output))


@app.command("upgrade-check")
def upgrade_check(
    to_bin: Annotated[str, typer.Option("--to-bin", metavar="DIR", help="bin directory of the newer PostgreSQL.")],
    keep: Annotated[bool, typer.Option("--keep", help="Leave the upgraded copy on disk (stopped).")] = False,
    json_output: JsonFlag = False,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Major-version upgrade rehearsal on a copy: pg_upgrade with the binaries in --to-bin,
    start, verify, integrity; extensions the new binaries lack are dropped on the copy and named."""
    from runner import recovery_cli

    raise typer.Exit(recovery_cli.upgrade_check(options(database_url, verbose), to_bin, keep, json_output))


# -- entry point ----------------------------------------------------------------------------
def database_error(exc: BaseException) -> str | None:
    """One line for a database error, or None when `exc` is not one. psycopg and SQLAlchemy
    are looked up only if a command imported them: an error cannot come from a module that
    was never loaded."""
    psycopg = sys.modules.get("psycopg")
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if psycopg and isinstance(exc, psycopg.OperationalError):
        from runner.db import explain_connection_error

        return str(explain_connection_error("the database", exc))
    if (psycopg and isinstance(exc, psycopg.Error)) or (sa_exc and isinstance(exc, sa_exc.DBAPIError)):
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"database refused the operation: {first[0] if first else type(exc).__name__}"
    return None


def main() -> None:
    """Console entry point: errors a user can cause print one line and exit non-zero."""
    try:
        app()
    except UserError as exc:
        console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        message = database_error(exc)
        if message is None:
            raise
        console(stderr=True).print(f"[red]error:[/red] {message}", highlight=False)
        sys.exit(1)
