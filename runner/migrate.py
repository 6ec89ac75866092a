"""Alembic, driven from Python: the runner's `migrate` command and the tests use this.

The configuration is built here, not read from an alembic.ini: the migrations ship inside
the package (runner.resources), wherever it is installed and whatever the working directory."""
from __future__ import annotations

import os

from alembic import command
from alembic.config import Config
from alembic.script.revision import RevisionError
from alembic.util import CommandError

from runner.errors import UserError
from runner.resources import MIGRATIONS_DIR
from runner.sqlsource import frozen_sql

MIGRATION_LOCK_KEY = 7_411_220_001  # arbitrary, constant: "smsao-db migrations"
VERSION_TABLE_SCHEMA = "smsao_migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes["database_url"] = url
    return cfg


def database_url(cfg: Config) -> str:
    url = cfg.attributes.get("database_url") or os.environ.get("DATABASE_URL")
    if not url:
        raise UserError("no database URL given to Alembic: set DATABASE_URL")
    return url


def apply_frozen_sql(op, name: str) -> None:
    """Run a migration's pinned SQL file on the migration's own transaction.

    It goes to psycopg directly, without parameters, so `%` and `:name` in PL/pgSQL
    are left alone and several statements run in one call."""
    op.get_bind().connection.driver_connection.execute(frozen_sql(name))


def run(action: str, url: str, revision: str | None = None) -> list[str]:
    """Run an Alembic action. After a downgrade, returns the pg_cron jobs it unscheduled
    because the database no longer defines them (CONTRACT section 4)."""
    cfg = alembic_config(url)
    cfg.attributes["read_only"] = action in ("current", "history")
    try:
        if action == "upgrade":
            command.upgrade(cfg, revision or "head")
        elif action == "downgrade":
            if not revision:
                raise UserError("downgrade needs a revision: e.g. `smsao-db migrate downgrade -1` or `base`")
            command.downgrade(cfg, revision)
            from runner import schedule

            return schedule.remove_orphaned(url)
        elif action == "current":
            command.current(cfg, verbose=False)
        elif action == "history":
            command.history(cfg, indicate_current=False)
        else:
            raise UserError(f"unknown migrate action '{action}': use upgrade, downgrade, current or history")
    except (CommandError, RevisionError) as exc:
        raise UserError(f"migration failed: {exc}. See `smsao-db migrate history` for known revisions") from None
    return []
