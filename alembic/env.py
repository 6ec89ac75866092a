"""The one place that connects for Alembic: it takes the migration lock, then migrates."""
import logging

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from runner.db import connect
from runner.migrate import MIGRATION_LOCK_KEY, VERSION_TABLE_SCHEMA, database_url

# The configuration is built in code (runner.migrate.alembic_config) and logging is the
# runner's (quiet unless -v): nothing to read from an ini file here.
config = context.config
log = logging.getLogger("alembic.env")


def run_migrations_online() -> None:
    url = database_url(config)
    # A session-level advisory lock on its own connection: per-migration commits on the
    # migrating connection would release a transaction-level one. A second runner waits
    # here, then reads the version table only once it holds the lock.
    with connect(url, autocommit=True) as lock_conn:
        got = lock_conn.execute("select pg_try_advisory_lock(%s)", (MIGRATION_LOCK_KEY,)).fetchone()[0]
        if not got:
            log.warning("another runner is migrating this database; waiting for it to finish")
            lock_conn.execute("select pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        # The connection is made by the runner (not parsed by SQLAlchemy), so every form
        # libpq accepts works here too (a key=value conninfo, multi-host), and a failure
        # is the runner's one redacted line.
        engine = create_engine("postgresql+psycopg://", poolclass=NullPool, creator=lambda: connect(url))
        with engine.connect() as connection:
            # Alembic's bookkeeping stays out of the API schema (PostgREST exposes public).
            # Created only when a migration will write to it: `current` changes nothing and
            # works for a role without CREATE on the database (even IF NOT EXISTS needs it).
            missing = connection.exec_driver_sql(
                f"select to_regnamespace('{VERSION_TABLE_SCHEMA}') is null").scalar()
            if missing and not config.attributes.get("read_only"):
                connection.exec_driver_sql(f"create schema {VERSION_TABLE_SCHEMA}")
            connection.commit()
            context.configure(
                connection=connection,
                version_table_schema=VERSION_TABLE_SCHEMA,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: migrations run PL/pgSQL against a live database")
run_migrations_online()
