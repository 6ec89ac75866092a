"""Logical backups of a server given by URL (issue 15, items 9, 10 and 19, and the records
of item 6), on a clone of the Supabase-shaped test database (tests/supabase_shape.sql): its
grants name Supabase's own roles (supabase_auth_admin, dashboard_user), which a scratch
server does not have. One backup serves the module."""
from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import janitor
from runner.recovery import pgserver

SMSAO_DB = Path(sys.executable).parent / "smsao-db"
PG15 = Path("/usr/lib/postgresql/15/bin")


class Shop:
    def __init__(self, url: str, base: Path):
        self.url = url
        self.base = base
        self.repo = base / "repo" / "nested"  # created by the backup, with its parents

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        e = {**os.environ, "COLUMNS": "250", "DATABASE_URL": self.url, "SMSAO_BACKUP_REPO": str(self.repo),
             "SMSAO_HOME": str(self.base / "no-embedded"), **(env or {})}
        # A permissive umask, as on many servers: the backup must not follow it.
        return subprocess.run([str(SMSAO_DB), *args], capture_output=True, text=True, env=e, timeout=300,
                              umask=0o002)

    def sql(self, query: str, params=None):
        with psycopg.connect(self.url, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else None


@pytest.fixture(scope="module")
def shop(cluster, supabase_template_db):
    name = f"smsao_logical_{uuid.uuid4().hex[:8]}"
    base = Path(tempfile.mkdtemp(prefix="smsao-logical-"))
    os.chmod(base, 0o711)  # the scratch servers run as the postgres OS user
    with janitor(cluster, name, supabase_template_db):
        s = Shop(cluster.url(name), base)
        uid = uuid.uuid4()
        s.sql("insert into auth.users (id, email) values (%s, 'ana@example.ao')", [uid])
        s.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('g', 'SMSAO', true)")
        proc = s.cli("backup", "--json")
        assert proc.returncode == 0, proc.stderr
        s.backup = json.loads(proc.stdout)
        yield s
    shutil.rmtree(base, ignore_errors=True)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_logical_backup_and_its_folders_are_private_whatever_the_umask(shop):
    dump = Path(shop.backup["file"])
    assert mode(dump) == 0o600 and mode(dump.with_suffix(".json")) == 0o600
    for folder in (dump.parent, shop.repo, shop.repo.parent):  # every folder it created
        assert mode(folder) == 0o700, folder
    assert mode(shop.base) == 0o711  # one that existed keeps its mode


def test_the_supabase_shaped_database_drills_and_restores_with_its_roles_grants(shop):
    proc = shop.cli("drill", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["passed"], json.dumps(report, indent=2)
    steps = {s["step"]: s for s in report["steps"]}
    assert "match the live database at the backup exactly" in steps["row counts"]["detail"]
    assert steps["verify"]["passed"] and steps["integrity"]["passed"]

    target = shop.base / "restored"
    proc = shop.cli("restore", "--to", str(target))
    assert proc.returncode == 0, proc.stderr
    server = pgserver.Server(target, PG15)
    port = pgserver.free_port()
    server.start(port)  # as the printed command does: pg_ctl -o '-p PORT' start
    try:
        private = f"host={target / 'run'} port={port} user=postgres dbname=smsao"
        with psycopg.connect(private, autocommit=True) as conn:
            assert conn.execute("select count(*) from auth.users where email = 'ana@example.ao'").fetchone()[0] == 1
            # Supabase's roles exist in the copy, and hold exactly their grants again.
            grants = {r[0] for r in conn.execute(
                "select grantee from information_schema.role_table_grants "
                "where table_schema = 'auth' and table_name = 'users'").fetchall()}
            assert {"supabase_auth_admin", "dashboard_user"} <= grants
            assert conn.execute("select rolcanlogin from pg_roles where rolname = 'dashboard_user'").fetchone() == (False,)
    finally:
        server.stop()


def test_a_logically_restored_copy_listens_only_on_its_private_socket(shop):
    target = shop.base / "restored-private"
    proc = shop.cli("restore", "--to", str(target))
    assert proc.returncode == 0, proc.stderr
    assert "host=" in proc.stdout and "127.0.0.1" not in proc.stdout  # how to reach it
    hba = [ln.split() for ln in (target / "pg_hba.conf").read_text().splitlines() if ln and not ln.startswith("#")]
    assert hba == [["local", "all", "all", "trust"]]
    assert mode(target / "run") == 0o700 and (target / "run").stat().st_uid == pgserver.owner_ids()[0]
    server = pgserver.Server(target, PG15)
    port = pgserver.free_port()
    server.start(port)
    try:
        with psycopg.connect(f"host={target / 'run'} port={port} user=postgres dbname=smsao") as conn:
            assert conn.execute("show listen_addresses").fetchone()[0] == ""
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        # Another local user cannot reach the socket.
        probe = subprocess.run(["runuser", "-u", "nobody", "--", "test", "-x", str(target / "run")])
        assert probe.returncode != 0
    finally:
        server.stop()


def test_every_backup_and_drill_of_a_server_given_by_url_is_recorded(shop):
    runs = shop.sql("select kind, ok, run_by, error, detail ->> 'kind' from smsao.recovery_runs order by id")
    assert ("backup", True, "runner", None, "logical") in runs
    assert any(kind == "drill" and ok for kind, ok, *_ in runs)
    # A failed run is recorded with its reason, and still fails in one line.
    proc = shop.cli("drill", env={"SMSAO_BACKUP_REPO": str(shop.base / "empty-repo")})
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "no logical backup yet" in proc.stderr
    kind, ok, error = shop.sql("select kind, ok, error from smsao.recovery_runs order by id desc limit 1")[0]
    assert (kind, ok) == ("drill", False) and "no logical backup yet" in error
    report = shop.sql("select public.production_system_health_check()")[0][0]
    assert report["metrics"]["backup_age_s"] < 600 and report["checks"]["backup_age_s"] == "ok"
