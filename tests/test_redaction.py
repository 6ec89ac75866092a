"""A password never reaches the terminal (issue 15, item 11): every form libpq accepts (a
URL's user info, `?password=`, a key=value conninfo quoted or not, a multi-host URL) through
the CLI paths that print connection errors, and never the argv of a program the runner
starts."""
from __future__ import annotations

import psycopg
import pytest

from cli_support import smsao_db
from runner.db import redact
from runner.embedded import free_port
from runner.recovery import pgserver

ROLE = "smsao_redact"
# Made of pieces no message contains by chance, so that any piece found is a leak; with
# characters that need quoting or escaping in some form.
RIGHT = "Qw8r-Tz5y-Hn2"
WRONG = "Zq9x Kv7w 'Jm3\\@"


def forms(host: str, port: int, dbname: str, password: str, dead_port: int) -> dict[str, str]:
    """The same login written every way libpq accepts."""
    from urllib.parse import quote

    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    escaped = quoted.replace(" ", "\\ ")  # unquoted, a backslash escapes a space too
    return {
        "url": f"postgresql://{ROLE}:{quote(password, safe='')}@{host}:{port}/{dbname}",
        "query": f"postgresql://{ROLE}@{host}:{port}/{dbname}?sslmode=disable&password={quote(password, safe='')}",
        "conninfo quoted": f"host={host} port={port} dbname={dbname} user={ROLE} password='{quoted}'",
        "conninfo unquoted": f"host={host} port={port} dbname={dbname} user={ROLE} password={escaped}",
        # A dead first host, then the real one: libpq tries both.
        "multi-host": f"postgresql://{ROLE}:{quote(password, safe='')}@{host}:{dead_port},{host}:{port}/{dbname}",
    }


def fragments(password: str) -> list[str]:
    """The password and its pieces as a leak would show them (raw, percent-encoded, escaped,
    or cut at a character that a pattern stopped at)."""
    import re
    from urllib.parse import quote

    return [password, quote(password, safe=""), *re.findall(r"[A-Za-z0-9]{3,}", password)]


def assert_no_leak(proc, password: str) -> str:
    out = proc.stdout + proc.stderr
    for fragment in fragments(password):
        assert fragment not in out, f"password leaked: {out!r}"
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture
def password_role(cluster):
    """A superuser role that must log in with a password (pg_hba asks it, ahead of `trust`)."""
    hba = cluster.data_dir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {ROLE} 127.0.0.1/32 scram-sha-256\n" + original)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f"create role {ROLE} login superuser password '{RIGHT}'")
        conn.execute("select pg_reload_conf()")
    try:
        yield ROLE
    finally:
        hba.write_text(original)
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("select pg_reload_conf()")
            conn.execute(f"drop role {ROLE}")


# The commands that print a connection error, each reaching it by its own path (schedule
# through pg_cron's lookup, migrate through Alembic's env.py, health through its exit 3).
COMMANDS = [("schedule", "apply"), ("schedule", "status"), ("migrate", "upgrade"), ("health",)]


def test_unreachable_server_in_every_form(password=WRONG):
    dead = free_port()
    for form, url in forms("127.0.0.1", dead, "smsao", password, free_port()).items():
        for command in COMMANDS:
            line = assert_no_leak(smsao_db(*command, url=url), password)
            assert "unreachable" in line or "cannot connect" in line, (form, command, line)


def test_wrong_password_in_every_form(cluster, db, password_role, password=WRONG):
    dbname = db.url.rsplit("/", 1)[1]
    for form, url in forms("127.0.0.1", cluster.port, dbname, password, free_port()).items():
        for command in COMMANDS:
            proc = smsao_db(*command, "--database-url", url)
            line = assert_no_leak(proc, password)
            assert "wrong user or password" in line, (form, command, line)
            assert "***" in line, line  # the connection string is shown, its password masked


def test_pg_crons_database_refused_after_the_target_accepted(cluster, db, password_role):
    """The first connection succeeds; the second, to pg_cron's database (built by the runner as
    a key=value conninfo carrying the password) is refused: the original leak."""
    hba = cluster.data_dir / "pg_hba.conf"
    before = hba.read_text()
    hba.write_text(f"host postgres {ROLE} 127.0.0.1/32 reject\n" + before)
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute("select pg_reload_conf()")
    try:
        dbname = db.url.rsplit("/", 1)[1]
        for form, url in forms("127.0.0.1", cluster.port, dbname, RIGHT, free_port()).items():
            for action in ("apply", "remove"):  # status takes the same path as apply
                proc = smsao_db("schedule", action, url=url)
                out = proc.stdout + proc.stderr
                for fragment in fragments(RIGHT):
                    assert fragment not in out, (form, action, out)
                assert "Traceback" not in out, out
                # `remove` reports an unusable pg_cron as nothing scheduled; the others fail.
                assert "pg_cron's database 'postgres'" in out, (form, action, out)
                assert "password=***" in out or ":***@" in out, (form, action, out)
    finally:
        hba.write_text(before)
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute("select pg_reload_conf()")


def test_a_key_value_conninfo_works_as_a_database_url(cluster, db, password_role):
    """Not only redacted: the runner accepts it, migrations included (SQLAlchemy never parses it)."""
    from alembic.script import ScriptDirectory

    from runner import migrate

    head = ScriptDirectory.from_config(migrate.alembic_config("")).get_current_head()
    url = forms("127.0.0.1", cluster.port, db.url.rsplit("/", 1)[1], RIGHT, free_port())["conninfo quoted"]
    proc = smsao_db("migrate", "current", url=url)
    assert proc.returncode == 0, proc.stderr
    assert head in proc.stdout
    assert RIGHT not in proc.stdout + proc.stderr


@pytest.mark.parametrize("text, secret", [
    ("postgresql://u:Se@cret1@h/db", "cret1"),
    ("cannot connect to postgresql://u@h/db?password=Secret1#frag", "Secret1"),
    ("postgres://:Secret1@h/db", "Secret1"),
    ("'user=u password = \"x\" sslpassword=Secret1'", "Secret1"),
    ("(host=h password='Se\\'cr et1' dbname=x)", "cr et1"),
    ("PASSWORD=Secret1 host=h", "Secret1"),
])
def test_redact_forms_the_cli_cannot_reach(text, secret):
    """Forms libpq would refuse before any message names them, checked at the function."""
    assert secret not in redact(text)


def test_programs_never_get_the_password_in_argv():
    """pg_dump and pg_basebackup get the connection string without the password, which goes
    into their environment (visible to the owner and root only), whatever its form."""
    for url in forms("db.example", 5432, "smsao", WRONG, 5433).values():
        conninfo, env = pgserver.without_password(url)
        assert env == {"PGPASSWORD": WRONG}, url
        for fragment in fragments(WRONG):
            assert fragment not in conninfo, conninfo
        assert psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"] == "smsao"
    assert pgserver.without_password("postgresql://u@h/db") == ("postgresql://u@h/db", {})
    with pytest.raises(Exception, match="sslpassword"):
        pgserver.without_password("postgresql://u@h/db?sslpassword=x")


def test_a_logical_backup_logs_in_with_the_password_from_the_environment(cluster, db, password_role, tmp_path):
    """pg_dump gets the password through PGPASSWORD whatever form carried it (pg_hba asks this
    role for one), and nothing printed shows it."""
    dbname = db.url.rsplit("/", 1)[1]
    for form, url in forms("127.0.0.1", cluster.port, dbname, RIGHT, free_port()).items():
        repo = tmp_path / form.replace(" ", "-")
        proc = smsao_db("backup", "--repo", str(repo), "--json", url=url, timeout=120)
        assert proc.returncode == 0, (form, proc.stderr)
        for fragment in fragments(RIGHT):
            assert fragment not in proc.stdout + proc.stderr, form
        assert list(repo.rglob("smsao-*.dump")), form


def test_a_password_equal_to_the_user_name_hides_only_the_password():
    """The connection string is redacted by its structure, so `postgres:postgres` keeps its
    user and database names readable."""
    from runner.db import explain_connection_error

    url = "postgresql://postgres:postgres@127.0.0.1:1/postgres"
    line = str(explain_connection_error(url, Exception("Connection refused")))
    assert "postgresql://postgres:***@127.0.0.1:1/postgres" in line
