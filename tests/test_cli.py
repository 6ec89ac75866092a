"""The real `smsao-db` console script: errors a user can cause are one line, no traceback."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from runner import migrate
from support import PROJECT_DIR, new_home, remove_new_home
from runner.embedded import Cluster, free_port

SMSAO_DB = PROJECT_DIR / ".venv" / "bin" / "smsao-db"
HEAD = ScriptDirectory.from_config(migrate.alembic_config("")).get_current_head()


def smsao_db(*args: str, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PG_BINDIR", "SMSAO_HOME")}
    return subprocess.run([str(SMSAO_DB), *args], capture_output=True, text=True, timeout=timeout,
                          env={**base, **(env or {})}, cwd=PROJECT_DIR)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    """Asserts the shape of a user error and returns its line."""
    assert proc.returncode != 0, proc
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, proc.stderr
    # Alembic's INFO lines may precede it; nothing follows it.
    assert proc.stderr.rstrip().splitlines()[-1] == lines[0], proc.stderr
    return lines[0]


def test_unreachable_database():
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/smsao"
    for args in (["migrate", "current", "--database-url", url], ["migrate", "upgrade", "head", "--database-url", url]):
        line = one_line_error(smsao_db(*args))
        assert "unreachable" in line and url in line


def test_invalid_database_url():
    line = one_line_error(smsao_db("migrate", "current", "--database-url", "mysql://u:Secret-9@h/x"))
    assert "invalid database URL" in line and "Secret-9" not in line


@pytest.fixture
def password_role(cluster):
    """A role that must log in with a password: pg_hba says scram for it, ahead of `trust`."""
    hba = cluster.data_dir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("host all smsao_pwtest 127.0.0.1/32 scram-sha-256\n" + original)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("create role smsao_pwtest login password 'Right-Pass-42'")
        conn.execute("select pg_reload_conf()")
    try:
        yield "smsao_pwtest"
    finally:
        hba.write_text(original)
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("select pg_reload_conf()")
            conn.execute("drop role smsao_pwtest")


def test_wrong_password(cluster, empty_db_url, password_role):
    dbname = empty_db_url.rsplit("/", 1)[1]
    wrong = f"postgresql://{password_role}:Not-The-Pass-77@127.0.0.1:{cluster.port}/{dbname}"
    line = one_line_error(smsao_db("migrate", "current", "--database-url", wrong))
    assert "wrong user or password" in line
    assert "Not-The-Pass-77" not in line and "***" in line  # the password is not echoed
    # The right password gets in; `current` on an unmigrated database reports nothing and
    # changes nothing, so it needs no CREATE privilege.
    right = f"postgresql://{password_role}:Right-Pass-42@127.0.0.1:{cluster.port}/{dbname}"
    proc = smsao_db("migrate", "current", "--database-url", right)
    assert proc.returncode == 0, proc.stderr
    assert HEAD not in proc.stdout
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("select to_regnamespace(%s)", [migrate.VERSION_TABLE_SCHEMA]).fetchone()[0] is None


def test_unknown_revision(empty_db_url):
    line = one_line_error(smsao_db("migrate", "upgrade", "no_such_rev", "--database-url", empty_db_url))
    assert "no_such_rev" in line
    line = one_line_error(smsao_db("migrate", "downgrade", "--database-url", empty_db_url))
    assert "downgrade needs a revision" in line
    line = one_line_error(smsao_db("migrate", "sideways", "--database-url", empty_db_url))
    assert "unknown migrate action" in line


def test_migrate_upgrade_then_current(empty_db_url):
    """The URL comes from --database-url or DATABASE_URL, alike."""
    option, env = ["--database-url", empty_db_url], {"DATABASE_URL": empty_db_url}
    current = smsao_db("migrate", "current", env=env)
    assert current.returncode == 0 and HEAD not in current.stdout, current.stderr
    up = smsao_db("migrate", "upgrade", "head", *option)
    assert up.returncode == 0, up.stderr
    assert "Running upgrade  -> 0001_foundation" in up.stderr
    # Quiet by default: Alembic's set-up chatter only with -v.
    assert "Context impl" not in up.stderr and "Will assume" not in up.stderr, up.stderr
    current = smsao_db("migrate", "current", env=env)
    assert current.returncode == 0, current.stderr
    assert current.stdout.strip() == f"{HEAD} (head)"
    again = smsao_db("migrate", "upgrade", env=env)  # head is the default, and a no-op now
    assert again.returncode == 0 and "Running upgrade" not in again.stderr, again.stderr


def test_global_options_before_or_after_the_command(db):
    """--database-url and -v are accepted on both sides of the command; after wins."""
    for args in (["--database-url", db.url, "health", "--json"], ["health", "--json", "--database-url", db.url],
                 ["-v", "--database-url", db.url, "migrate", "current"],
                 ["migrate", "current", "-v", "--database-url", db.url]):
        proc = smsao_db(*args)
        assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert smsao_db("--database-url", db.url, "migrate", "current").stdout.strip() == f"{HEAD} (head)"
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/smsao"
    # The one after the command wins over the one before, which wins over DATABASE_URL.
    assert smsao_db("--database-url", unreachable, "migrate", "current", "--database-url", db.url).returncode == 0
    assert smsao_db("--database-url", db.url, "migrate", "current", env={"DATABASE_URL": unreachable}).returncode == 0
    assert "unreachable" in one_line_error(smsao_db("migrate", "current", env={"DATABASE_URL": unreachable}))


def test_verbose_shows_alembic_details_before_or_after(db):
    for args in (["-v", "--database-url", db.url, "migrate", "upgrade"],
                 ["migrate", "upgrade", "--database-url", db.url, "--verbose"]):
        proc = smsao_db(*args)
        assert proc.returncode == 0 and "Context impl PostgresqlImpl" in proc.stderr, (args, proc.stderr)


def test_no_database_anywhere(tmp_path):
    line = one_line_error(smsao_db("migrate", "current", env={"SMSAO_HOME": str(tmp_path)}))
    assert "smsao-db up" in line and "DATABASE_URL" in line


def test_postgres_binaries_missing():
    home = Path(tempfile.mkdtemp(prefix="smsao-cli-"))
    try:
        line = one_line_error(smsao_db("up", env={"PG_BINDIR": "/nonexistent", "SMSAO_HOME": str(home)}))
        assert "PG_BINDIR=/nonexistent" in line
        assert not (home / "pgdata").exists()
    finally:
        # NOT home.parent: home is mkdtemp's own directory, its parent is the machine's /tmp
        # (removing it wiped every other test's servers; fixed by the lead).
        shutil.rmtree(home, ignore_errors=True)


def test_up_refuses_a_database_url(empty_db_url):
    line = one_line_error(smsao_db("up", env={"DATABASE_URL": empty_db_url}))
    assert "migrate upgrade" in line


def test_up_up_down_embedded():
    """Root runs the server as `postgres`, in a fresh SMSAO_HOME; `up` is idempotent."""
    home = new_home("smsao-cli-")
    env = {"SMSAO_HOME": str(home)}
    cluster = Cluster(home=home)
    try:
        first = smsao_db("up", env=env)
        assert first.returncode == 0, first.stderr
        assert "embedded database ready" in first.stdout
        assert "Context impl" not in first.stderr
        url = cluster.url()
        assert cluster.password not in first.stdout + first.stderr  # only `url` prints it
        assert smsao_db("url", env=env).stdout.strip() == url
        with psycopg.connect(url) as conn:
            assert conn.execute(f"select version_num from {migrate.VERSION_TABLE_SCHEMA}.alembic_version"
                                ).fetchall() == [(HEAD,)]
            assert conn.execute("select extname from pg_extension where extname = 'pg_cron'").fetchone()
            # A first look shows a status at once: `up` stored a snapshot and a sample.
            # (pg_cron's own runs may have added more by now: its jobs run from the first minute.)
            assert {s for s, in conn.execute("select system_status from public.system_health_snapshots")} == {"critical"}
            assert conn.execute("select count(*) from public.performance_samples").fetchone()[0] >= 1
            conn.execute("insert into auth.users (id, email) values (gen_random_uuid(), 'keep@test.ao')")
            conn.commit()
        if os.geteuid() == 0:
            assert (home / "pgdata").stat().st_uid != 0
        # `up` created the home, so it owns it: private, and marked as the package's (issue 15 #20).
        assert home.stat().st_mode & 0o777 == 0o700 and (home / ".smsao-home").is_file()

        second = smsao_db("up", env=env)
        assert second.returncode == 0, second.stderr
        assert "Running upgrade" not in second.stderr
        assert cluster.url() == url  # the same server, not a second one
        current = smsao_db("migrate", "current", env=env)  # no URL: the running embedded database
        assert current.stdout.strip() == f"{HEAD} (head)", current.stderr

        down = smsao_db("down", env=env)
        assert down.returncode == 0 and "stopped" in down.stdout, down.stderr
        assert not cluster.running
        assert "not running" in one_line_error(smsao_db("url", env=env))
        down_again = smsao_db("down", env=env)
        assert down_again.returncode == 0 and "was not running" in down_again.stdout

        # Data survives a restart.
        assert smsao_db("up", env=env).returncode == 0
        with psycopg.connect(cluster.url()) as conn:
            assert conn.execute("select count(*) from public.profiles where email = 'keep@test.ao'").fetchone()[0] == 1
    finally:
        cluster.destroy()
        remove_new_home(home)


def test_up_demo_loads_a_day_of_history_once(tmp_path):
    """`up --demo` twice: demo users, 24 h of snapshots and samples, one incident; nothing doubled."""
    home = new_home("smsao-demo-")
    cluster = Cluster(home=home)
    try:
        for _ in range(2):
            proc = smsao_db("up", "--demo", env={"SMSAO_HOME": str(home)})
            assert proc.returncode == 0, proc.stderr
        with psycopg.connect(cluster.url()) as conn:
            demo = conn.execute("""
                select count(*), min(checked_at) < now() - interval '23 hours',
                       count(*) filter (where system_status = 'critical')
                  from public.system_health_snapshots where report ->> 'demo' = 'true'""").fetchone()
            assert demo == (288, True, 8)
            assert conn.execute("select count(*) from public.performance_samples "
                                "where details ->> 'demo' = 'true'").fetchone()[0] == 1440
            alerts = conn.execute("select severity from public.system_alerts where report ->> 'demo' = 'true' "
                                  "order by created_at").fetchall()
            assert [a for (a,) in alerts] == ["critical", "recovered"]
            assert conn.execute("select count(*) from auth.users where email like '%@demo.smsao.ao'").fetchone()[0] == 300
            # 18 months of business history (sql/demo/analytics.sql), loaded once.
            assert conn.execute("select count(*), count(distinct price_per_credit) from public.credit_prices"
                                ).fetchone() == (2, 2)
            # The newest snapshot is the real one `up` recorded, not demo history.
            assert conn.execute("select report ->> 'demo' from public.system_health_snapshots "
                                "order by checked_at desc limit 1").fetchone()[0] is None
    finally:
        cluster.destroy()
        remove_new_home(home)


def test_the_embedded_database_is_closed_to_others(tmp_path):
    """TCP needs the password (kept 0600); the socket directory is private to the server's OS user."""
    home = new_home("smsao-sec-")
    cluster = Cluster(home=home)
    try:
        cluster.start()
        assert cluster.password_file.stat().st_mode & 0o777 == 0o600
        assert cluster.socket_dir.stat().st_mode & 0o777 == 0o700
        assert home.stat().st_mode & 0o777 == 0o700
        for url in (f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres",
                    f"postgresql://postgres:wrong@127.0.0.1:{cluster.port}/postgres"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(url, connect_timeout=5)
        line = one_line_error(smsao_db("migrate", "current", "--database-url",
                                       f"postgresql://postgres:wrong@127.0.0.1:{cluster.port}/postgres"))
        assert "wrong user or password" in line
        with psycopg.connect(cluster.url("postgres")) as conn:
            assert conn.execute("select current_setting('cron.host')").fetchone()[0] == str(cluster.socket_dir)
        if os.geteuid() == 0:  # another local user cannot even reach the socket
            proc = subprocess.run(["runuser", "-u", "nobody", "--", "psql", "-h", str(cluster.socket_dir),
                                   "-p", str(cluster.port), "-U", "postgres", "-c", "select 1", "postgres"],
                                  capture_output=True, text=True, timeout=30)
            assert proc.returncode != 0 and "Permission denied" in proc.stderr, proc.stderr
    finally:
        cluster.destroy()
        remove_new_home(home)
