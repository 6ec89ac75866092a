"""`smsao-db`: a thin runner over what the database exposes.

Start-up is paid on every call (a monitoring system runs `health` every minute), so only
Typer is imported here at module level: each command imports what it uses (psycopg,
Alembic and SQLAlchemy, Rich, the web stack) when it runs.

Global options (`--database-url`, `-v`) are accepted before the command (the callback)
and after it (each command's own option); the one given after the command wins, then the
one before it, then DATABASE_URL."""
from __future__ import annotations

import sys
from pathlib import Path
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
    from runner.ha.commands import running_url

    formation_url = running_url()  # `up --ha`: the local formation's multi-host URL
    if formation_url:
        return formation_url
    raise UserError("no DATABASE_URL given and the embedded database is not running: "
                    "run `smsao-db up` or set DATABASE_URL")


# -- the embedded database ------------------------------------------------------------------
@app.command()
def up(demo_data: Annotated[bool, typer.Option("--demo", help="Load demo data and 24 h of history.")] = False,
       ha: Annotated[bool, typer.Option(
           "--ha", help="A local pg_auto_failover formation (monitor, primary, synchronous secondary).")] = False,
       backup_repo: Annotated[Optional[str], typer.Option(
           "--backup-repo", metavar="DIR", envvar="SMSAO_BACKUP_REPO", show_envvar=True,
           help="pgBackRest repository (default: backup/ in the data home).")] = None,
       verbose: Verbose = False) -> None:
    """Start the embedded PostgreSQL (init on first use), migrate, record a first health check."""
    from runner import demo, migrate, schedule
    from runner.db import connect, redact
    from runner.embedded import Cluster

    if GLOBAL.database_url:
        raise UserError("`up` manages the embedded database; a database URL is given (DATABASE_URL or "
                        "--database-url), so use `smsao-db migrate upgrade` for that server instead")
    use_verbose(verbose)
    if ha:
        from runner.ha import commands as ha_commands

        url = ha_commands.up(console(), console(stderr=True), backup_repo)
        if demo_data:
            console().print("demo data loaded" if demo.load(url) else "demo data already present")
        console().print(f"[green]formation ready[/green]: {redact(url)} "
                        "(`smsao-db url` prints it with the password)", highlight=False)
        return
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
    # The jobs are the point of the embedded database (pg_cron is always preloaded there):
    # not scheduling them is a failed `up`. Applying them stores the first snapshot too.
    try:
        applied = schedule.apply(url)
    except UserError as exc:
        raise UserError(f"the pg_cron jobs could not be scheduled: {exc}") from None
    changed = sum(1 for _, action, _ in applied if action != "unchanged")
    console().print(f"pg_cron: {len(applied)} jobs scheduled ({changed} created or updated)")
    from runner.recovery import commands as recovery

    url = recovery.after_up(cluster, backup_repo)  # pgBackRest + WAL archiving (may restart)
    console().print(f"[green]embedded database ready[/green]: {redact(url)} "
                    "(`smsao-db url` prints it with the password)", highlight=False)


@app.command()
def down(verbose: Verbose = False) -> None:
    """Stop the embedded PostgreSQL (its data stays in .smsao/)."""
    from runner.embedded import Cluster
    from runner.recovery import commands as recovery

    use_verbose(verbose)
    from runner.ha import commands as ha_commands

    if ha_commands.down():
        console().print("formation stopped")
    recovery.before_down()  # archive the newest WAL first
    stopped = Cluster().stop()
    console().print("embedded database stopped" if stopped else "embedded database was not running")


@app.command()
def url(dbname: Annotated[str, typer.Option(help="Database name in the URL.")] = "smsao",
        verbose: Verbose = False) -> None:
    """Print the embedded database's URL, password included (for psql and apps)."""
    from runner.embedded import Cluster

    cluster = Cluster()
    if not cluster.running:
        from runner.ha.formation import Formation

        formation = Formation()
        if formation.running:
            print(formation.url(dbname))  # multi-host, target_session_attrs=read-write
            return
        raise UserError(f"the embedded database in {cluster.home} is not running: run `smsao-db up`")
    print(cluster.url(dbname))


# -- the local pg_auto_failover formation (runner/ha/) ---------------------------------------
ha_app = typer.Typer(help="The local pg_auto_failover formation (`up --ha`).", no_args_is_help=True,
                     rich_markup_mode=None)
app.add_typer(ha_app, name="ha")


@ha_app.command("status")
def ha_status(json_output: JsonFlag = False, verbose: Verbose = False) -> None:
    """The formation's nodes, their states and the replication lag (exit 1 unless all is as assigned)."""
    from runner.ha import commands as ha_commands

    use_verbose(verbose)
    raise typer.Exit(ha_commands.status(json_output, console()))


@app.command("failover-drill")
def failover_drill(
    switchover: Annotated[bool, typer.Option("--switchover", help="A planned switchover instead of kill -9.")] = False,
    clients: Annotated[int, typer.Option(help="Concurrent app clients writing through the URL.")] = 4,
    ops: Annotated[int, typer.Option(help="At most this many request+approve loops per client.")] = 400,
    seconds: Annotated[float, typer.Option(help="At most this long for the write load.")] = 60,
    json_output: JsonFlag = False,
    verbose: Verbose = False,
) -> None:
    """Kill the primary (or switch over) under write load: time to the first write on the new
    primary, acknowledged commits lost (exit 1 unless 0), integrity, scheduler gap, rejoin time."""
    import json

    from runner.ha import drill as ha_drill

    use_verbose(verbose)
    if clients < 1 or ops < 1 or seconds <= 0:
        raise UserError("--clients, --ops and --seconds must be positive")
    log = (lambda msg: None) if json_output else (lambda msg: console().print(msg, highlight=False))
    report = ha_drill.run(switchover=switchover, clients=clients, ops_per_client=ops, max_seconds=seconds, log=log)
    if json_output:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        ha_drill.render(report, console())
    raise typer.Exit(0 if report.passed else 1)


# -- migrations and schedules ---------------------------------------------------------------
# Alembic's relative revisions look like options to Click: `downgrade -1` would be refused
# as "No such option: -1". Unknown options reach the command as arguments instead, and it
# accepts only the relative forms among them (an unknown `--option` is still refused).
RELATIVE_REVISION = r"-\d+"


@app.command(context_settings={"ignore_unknown_options": True})
def migrate(
    action: Annotated[str, typer.Argument(help="upgrade | downgrade | current | history")] = "upgrade",
    revision: Annotated[Optional[str], typer.Argument(help="target revision (upgrade: head)")] = None,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Apply or inspect migrations (Alembic), one runner at a time. REV may be relative, as in
    Alembic: `downgrade -1`, `upgrade +1`, `downgrade base`."""
    import re

    from runner import migrate as migrations

    for arg in (action, revision):
        if arg and arg.startswith("-") and not re.fullmatch(RELATIVE_REVISION, arg):
            raise UserError(f"no such option: {arg} (see `smsao-db migrate --help`)", exit_code=2)
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

    from runner.monitoring import health as healthcheck

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
    from runner.monitoring import monitor as live_view

    target = options(database_url, verbose)
    if once:
        raise typer.Exit(live_view.once(target, console()))
    if interval <= 0:
        raise UserError("--interval must be a positive number of seconds")
    live_view.run(target, console(), interval)


@app.command()
def verify(
    tap: Annotated[bool, typer.Option("--tap", help="Print TAP (each test file a subtest) instead of the summary.")] = False,
    path: Annotated[bool, typer.Option("--path", help="Print the folder of the test files (for pg_prove) and exit.")] = False,
    extra: Annotated[Optional[Path], typer.Option(
        "--extra", help="A folder of your own pgTAP *.sql files, run after the package's.")] = None,
    database_url: DatabaseUrl = None,
    verbose: Verbose = False,
) -> None:
    """Run the package's pgTAP tests (sql/tests), each file in a transaction rolled back (exit 0: all pass)."""
    from rich.console import Console

    from runner import verify as verifier
    from runner.resources import TESTS_DIR

    if path:
        print(TESTS_DIR)
        return
    results = verifier.run(options(database_url, verbose), extra)
    if tap:
        print(verifier.tap_stream(results))
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
    from runner.web import app as web

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


# -- recovery (issue 12): the logic lives in runner/recovery/, reached through
# runner/recovery/commands.py when the command runs (given the URL: it never imports this module).
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
    from runner.recovery import commands as recovery

    use_verbose(verbose)
    recovery.backup(database_url or GLOBAL.database_url, repo, full, json_output)


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
    from runner.recovery import commands as recovery

    use_verbose(verbose)
    recovery.restore(database_url or GLOBAL.database_url, to, target_time, repo, dump)


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
    from runner.recovery import commands as recovery

    use_verbose(verbose)
    raise typer.Exit(recovery.drill(database_url or GLOBAL.database_url, repo, keep, json_output))


@app.command()
def integrity(json_output: JsonFlag = False, database_url: DatabaseUrl = None, verbose: Verbose = False) -> None:
    """Invariants a restore or a bug could break: balances = ledger, counters = recount, orphans
    accounted, indexes sound (amcheck). Exit 0 only when all hold."""
    from runner.recovery import commands as recovery

    raise typer.Exit(recovery.integrity(options(database_url, verbose), json_output))


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
    from runner.recovery import commands as recovery

    raise typer.Exit(recovery.upgrade_check(options(database_url, verbose), to_bin, keep, json_output))


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
