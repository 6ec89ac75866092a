"""The embedded data home (issue 15, item 20): smsao-db changes the mode and owner only of a
home it created. SMSAO_HOME pointing at a directory somebody else made (a shared /tmp, a
project folder, an empty directory that is not private) is refused in one line and left
exactly as it was; a home made by an older runner (no marker yet) is adopted."""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from cli_support import SMSAO_DB
from runner.embedded import HOME_MARKER, SUPERUSER, Cluster
from support import new_home, remove_new_home

AS_ROOT = os.geteuid() == 0


def up(home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SMSAO_HOME": str(home), "COLUMNS": "250"}
    env.pop("DATABASE_URL", None)
    return subprocess.run([str(SMSAO_DB), "up"], capture_output=True, text=True, env=env, timeout=120)


def snapshot(path: Path) -> tuple:
    """Mode, owner and contents: all that a refusal must leave alone."""
    st = path.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, sorted(p.name for p in path.iterdir())


def assert_refused(home: Path) -> str:
    before = snapshot(home)
    proc = up(home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1, proc.stderr
    assert f"the data home {home} " in proc.stderr and "left alone" in proc.stderr, proc.stderr
    assert snapshot(home) == before
    return proc.stderr


@pytest.fixture
def scratch():
    base = Path(tempfile.mkdtemp(prefix="smsao-home-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_a_shared_directory_like_tmp(scratch):
    """What /tmp is: world-writable and sticky, other users' files in it. A copy of it, so
    that a regression closes this directory rather than the machine's /tmp."""
    shared = scratch / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "someone-elses-file").write_text("x")
    assert_refused(shared)
    # A marker planted by whoever may write there does not make it ours.
    (shared / HOME_MARKER).write_text("planted")
    assert_refused(shared)


def test_an_existing_project_directory(scratch):
    project = scratch / "project"
    project.mkdir(mode=0o755)
    project.chmod(0o755)
    (project / "README.md").write_text("mine")
    assert "already exists and was not created by smsao-db" in assert_refused(project)


def test_an_empty_directory_that_is_not_private(scratch):
    empty = scratch / "empty"
    empty.mkdir()
    empty.chmod(0o755)
    assert_refused(empty)


@pytest.mark.skipif(not AS_ROOT, reason="the server runs as another OS user only under root")
def test_an_empty_private_directory_of_the_wrong_owner(scratch):
    """Under root the server runs as `postgres`: root's own empty 0700 directory would need a
    change of owner, so it is refused too (and the line says which owner would do)."""
    mine = scratch / "mine"
    mine.mkdir(mode=0o700)
    assert f"owned by '{SUPERUSER}'" in assert_refused(mine)


@pytest.mark.skipif(not AS_ROOT, reason="needs another OS user to plant the marker")
def test_a_marker_planted_by_another_user(scratch):
    home = scratch / "home"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / HOME_MARKER).write_text("planted")
    nobody = pwd.getpwnam("nobody")
    os.chown(home / HOME_MARKER, nobody.pw_uid, nobody.pw_gid)
    assert_refused(home)


def test_a_file_instead_of_a_directory(scratch):
    path = scratch / "file"
    path.write_text("x")
    proc = up(path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "is not a directory" in proc.stderr and path.read_text() == "x"


def test_a_new_home_is_created_private_and_marked_then_reused():
    """The package creates the home, so it owns it: 0700, the server's OS user, the marker; a
    home made by an older runner (a cluster, no marker) is recognised and adopted."""
    home = new_home("smsao-home-")
    cluster = Cluster(home=home, settings={"fsync": "off"})
    try:
        cluster.init()
        st = home.stat()
        assert stat.S_IMODE(st.st_mode) == 0o700 and (home / HOME_MARKER).is_file()
        if AS_ROOT:
            assert st.st_uid == pwd.getpwnam(SUPERUSER).pw_uid
        (home / HOME_MARKER).unlink()  # what a home made before the marker looks like
        home.chmod(0o750)  # and its mode, should it have drifted, is the package's to fix
        cluster.start()
        assert (home / HOME_MARKER).is_file() and stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        cluster.stop()
        remove_new_home(home)


def test_a_home_first_made_by_a_logical_backup_is_the_packages(db):
    """`smsao-db backup` of a server given by URL, with no --repo, writes into the embedded
    home's default repository: it makes that home as `up` would, so `up` accepts it later."""
    home = new_home("smsao-home-")
    try:
        env = {**os.environ, "SMSAO_HOME": str(home), "DATABASE_URL": db.url}
        env.pop("SMSAO_BACKUP_REPO", None)
        proc = subprocess.run([str(SMSAO_DB), "backup", "--json"], capture_output=True, text=True, env=env,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert list((home / "backup").rglob("smsao-*.dump")) and (home / HOME_MARKER).is_file()
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
        Cluster(home=home)._prepare_home()  # what `up` does first: accepted, not refused
    finally:
        remove_new_home(home)


# -- a backup repository the user names (`SMSAO_BACKUP_REPO`, `--repo`) is theirs too ----------------
def test_a_new_backup_repository_is_made_private_to_the_server(scratch):
    from runner.recovery import pgserver

    repo = pgserver.repository_dir(scratch / "new-repo")
    st = repo.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert st.st_uid == (pwd.getpwnam(SUPERUSER).pw_uid if AS_ROOT else os.geteuid())


def test_an_existing_backup_repository_keeps_its_mode_and_owner(scratch):
    from runner.recovery import pgserver

    repo = scratch / "shared-backups"
    repo.mkdir()
    repo.chmod(0o775)
    if AS_ROOT:
        server = pwd.getpwnam(SUPERUSER)
        os.chown(repo, server.pw_uid, server.pw_gid)
    before = snapshot(repo)
    assert pgserver.repository_dir(repo) == repo
    assert snapshot(repo) == before


@pytest.mark.skipif(not AS_ROOT, reason="the server runs as another OS user only under root")
def test_an_existing_backup_repository_the_server_cannot_write_is_refused_untouched(scratch):
    from runner.errors import UserError
    from runner.recovery import pgserver

    repo = scratch / "roots-backups"
    repo.mkdir(mode=0o755)
    repo.chmod(0o755)
    before = snapshot(repo)
    with pytest.raises(UserError, match=f"the '{SUPERUSER}' OS user cannot write it.*chown {SUPERUSER}"):
        pgserver.repository_dir(repo)
    assert snapshot(repo) == before
