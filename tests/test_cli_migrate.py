"""`smsao-db migrate` takes Alembic's relative revisions (issue 15, item 23): `downgrade -1`,
`upgrade +1`, `downgrade base`, on a real database through the console script."""
from __future__ import annotations

import psycopg
from alembic.script import ScriptDirectory

from cli_support import smsao_db
from runner import migrate

SCRIPTS = ScriptDirectory.from_config(migrate.alembic_config(""))
HEAD = SCRIPTS.get_current_head()
BEFORE_HEAD = SCRIPTS.get_revision(HEAD).down_revision
TWO_BEFORE_HEAD = SCRIPTS.get_revision(BEFORE_HEAD).down_revision


def version(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute(f"select to_regclass('{migrate.VERSION_TABLE_SCHEMA}.alembic_version')").fetchone()[0]:
            return None
        row = conn.execute(f"select version_num from {migrate.VERSION_TABLE_SCHEMA}.alembic_version").fetchone()
        return row[0] if row else None


def ok(*args: str, url: str) -> str:
    proc = smsao_db("migrate", *args, url=url, timeout=300)
    assert proc.returncode == 0, f"migrate {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout + proc.stderr


def test_relative_revisions_as_in_alembic(empty_db_url):
    url = empty_db_url
    ok("upgrade", "head", url=url)
    assert version(url) == HEAD
    ok("downgrade", "-1", url=url)
    assert version(url) == BEFORE_HEAD
    ok("downgrade", "-1", "--database-url", url, url=None)  # options after the revision, too
    assert version(url) == TWO_BEFORE_HEAD
    ok("upgrade", "+1", url=url)
    assert version(url) == BEFORE_HEAD
    ok("upgrade", "+1", url=url)
    assert version(url) == HEAD
    ok("downgrade", "head-2", url=url)  # relative to a named revision
    assert version(url) == TWO_BEFORE_HEAD
    ok("upgrade", "head", url=url)
    ok("downgrade", "base", url=url)
    assert version(url) is None
    # Below base there is nothing: one line, and nothing changed.
    proc = smsao_db("migrate", "downgrade", "-1", url=url)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: migration failed") and proc.stderr.count("\n") == 1, proc.stderr
    assert version(url) is None


def test_unknown_options_are_still_refused(empty_db_url):
    for args in (["downgrade", "--to"], ["--bogus"], ["upgrade", "-x"], ["downgrade", "-1x"]):
        proc = smsao_db("migrate", *args, url=empty_db_url)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: no such option"), (args, proc.stderr)
    assert version(empty_db_url) is None
