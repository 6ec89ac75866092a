"""`smsao-db`: a thin runner over what the database exposes."""
from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import psycopg
import sqlalchemy.exc
import typer
from rich.console import Console

from runner import demo, migrate as migrations
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
def up(demo_data: Annotated[bool, typer.Option("--demo", help="Load demo data.")] = False) -> None:
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
    console.print(f"[green]embedded database ready[/green]: {url}")


@app.command()
def down() -> None:
    """Stop the embedded PostgreSQL (its data stays in .smsao/)."""
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
