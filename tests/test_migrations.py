"""Migrations: reproducible (round trip, drift against sql/), serialised by the advisory
lock, safe on a database that already has Supabase's auth objects and users."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid

import psycopg
import pytest
from alembic.script import ScriptDirectory

from runner import migrate
from support import PROJECT_DIR
from runner.embedded import find_bindir
from runner.errors import UserError
from runner.sqlsource import source_files

HEAD = ScriptDirectory.from_config(migrate.alembic_config("")).get_current_head()


def pg_dump(url: str, *extra: str) -> str:
    proc = subprocess.run(
        [find_bindir() / "pg_dump", "--schema-only", *extra, "--dbname", url],
        capture_output=True, text=True, check=True)
    # The one normalisation: pg_dump >= 15.14 wraps its output in `\restrict <random key>`
    # and `\unrestrict <key>` (psql meta-commands against CVE-2025-8714); the key differs on
    # every run and says nothing about the schema.
    return "".join(line for line in proc.stdout.splitlines(keepends=True)
                   if not line.startswith(("\\restrict ", "\\unrestrict ")))


def version(url: str) -> list[str] | None:
    """The alembic version rows, or None when the version table does not exist."""
    with psycopg.connect(url) as conn:
        if conn.execute("select to_regclass(%s)", [f"{migrate.VERSION_TABLE_SCHEMA}.alembic_version"]).fetchone()[0] is None:
            return None
        return [r[0] for r in conn.execute(f"select version_num from {migrate.VERSION_TABLE_SCHEMA}.alembic_version")]


def leftovers(url: str) -> dict[str, list]:
    """Everything of ours that could survive a downgrade to base."""
    with psycopg.connect(url) as conn:
        q = lambda sql: [r[0] for r in conn.execute(sql)]  # noqa: E731
        return {
            "public relations": q("select relname from pg_class where relnamespace = 'public'::regnamespace"),
            "public functions": q("select proname from pg_proc where pronamespace = 'public'::regnamespace"),
            "public types": q("select typname from pg_type where typnamespace = 'public'::regnamespace"),
            "schemas": q("select nspname from pg_namespace where nspname in ('smsao', 'auth')"),
            "auth objects": q("select oid::regprocedure::text from pg_proc where proname in ('uid', 'role', 'jwt')"
                              " and pronamespace::regnamespace::text = 'auth'"
                              " union all select relname from pg_class where relnamespace::regnamespace::text = 'auth'"),
            "triggers": q("select tgname from pg_trigger where not tgisinternal"),
        }


def test_round_trip_leaves_nothing_and_rebuilds_identical_schema(empty_db_url):
    migrate.run("upgrade", empty_db_url, "head")
    assert version(empty_db_url) == [HEAD]
    first = pg_dump(empty_db_url)
    assert "CREATE TABLE public.profiles" in first

    migrate.run("downgrade", empty_db_url, "base")
    assert version(empty_db_url) == []
    assert leftovers(empty_db_url) == {k: [] for k in leftovers(empty_db_url)}
    # What may stay: the cluster-wide roles and their USAGE on schema public (Supabase has
    # those too, so a downgrade cannot tell they were ours), and the empty version table.
    rest = pg_dump(empty_db_url, "--exclude-schema", migrate.VERSION_TABLE_SCHEMA)
    statements = [line for line in rest.splitlines() if line and not line.startswith(("--", "SET ", "SELECT "))]
    assert statements == ["GRANT USAGE ON SCHEMA public TO anon;",
                          "GRANT USAGE ON SCHEMA public TO authenticated;",
                          "GRANT USAGE ON SCHEMA public TO service_role;"], rest

    migrate.run("upgrade", empty_db_url, "head")
    assert pg_dump(empty_db_url) == first


def install_from_source(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        # Files within a folder install alphabetically, so a SQL-language function may
        # precede one it calls; bodies are checked by migrating, as pg_restore does.
        conn.execute("set check_function_bodies = off")
        for f in source_files():
            # One script per file, no parameters: psycopg sends it as a simple query.
            conn.execute(f.read_text())


def test_migrated_schema_equals_sql_source(cluster, empty_db_url):
    migrate.run("upgrade", empty_db_url, "head")
    source_db = f"smsao_src_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f"create database {source_db}")
    try:
        install_from_source(cluster.url(source_db))
        migrated = pg_dump(empty_db_url, "--exclude-schema", migrate.VERSION_TABLE_SCHEMA)
        from_source = pg_dump(cluster.url(source_db), "--exclude-schema", migrate.VERSION_TABLE_SCHEMA)
    finally:
        with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
            conn.execute(f"drop database {source_db} with (force)")
    # No normalisation: both dumps name no database, and pg_dump sorts by name and dependency.
    assert migrated == from_source


def test_concurrent_upgrades_apply_the_schema_once(empty_db_url):
    # Separate processes: Alembic's `context` is process-global, so threads would share it.
    code = ("import sys; from runner import cli, migrate; cli.configure_logging(False); "
            "migrate.run('upgrade', sys.argv[1], 'head')")
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_db_url], cwd=PROJECT_DIR,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    # Had both applied 0001, the second `create schema smsao` would have failed.
    assert [rc for rc, _ in results] == [0, 0], results
    assert version(empty_db_url) == [HEAD]
    ran = [err.count("Running upgrade  -> 0001_foundation") for _, err in results]
    assert sorted(ran) == [0, 1], results


def test_upgrade_waits_for_the_migration_lock(empty_db_url):
    holder = psycopg.connect(empty_db_url, autocommit=True)
    holder.execute("select pg_advisory_lock(%s)", [migrate.MIGRATION_LOCK_KEY])
    outcome: list = []

    def upgrade():
        try:
            migrate.run("upgrade", empty_db_url, "head")
            outcome.append("ok")
        except Exception as exc:  # reported by the assertion below
            outcome.append(exc)

    worker = threading.Thread(target=upgrade)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        waiting = False
        while time.monotonic() < deadline and not waiting:
            # The runner's lock connection is blocked on our advisory lock.
            waiting = holder.execute(
                "select exists (select from pg_locks where locktype = 'advisory' and not granted"
                " and pid <> pg_backend_pid())").fetchone()[0]
            time.sleep(0.05)
        assert waiting, "the upgrade never queued on the migration lock"
        time.sleep(1)
        assert worker.is_alive() and not outcome
        assert version(empty_db_url) is None  # nothing applied, not even the version table
    finally:
        holder.execute("select pg_advisory_unlock(%s)", [migrate.MIGRATION_LOCK_KEY])
        holder.close()
        worker.join(timeout=60)
    assert outcome == ["ok"]
    assert version(empty_db_url) == [HEAD]


SUPABASE_UID = """
create function auth.uid() returns uuid language sql stable as $$
  -- supabase's own auth.uid()
  select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
$$;
"""


def test_existing_auth_users_get_profiles_and_supabase_objects_survive(empty_db_url):
    users = [uuid.uuid4() for _ in range(3)]
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("create schema auth")
        conn.execute("create table auth.users (id uuid primary key, email text,"
                     " raw_user_meta_data jsonb, created_at timestamptz default now())")
        conn.execute(SUPABASE_UID)
        conn.execute("insert into auth.users (id, email, raw_user_meta_data) values"
                     " (%s, 'a@x.ao', '{\"full_name\": \"Ana\"}'), (%s, 'b@x.ao', '{}'), (%s, null, null)", users)
        original_uid = conn.execute("select prosrc from pg_proc where oid = 'auth.uid()'::regprocedure").fetchone()[0]

    migrate.run("upgrade", empty_db_url, "head")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        profiles = conn.execute("select user_id, email, full_name, status, credits from public.profiles"
                                " order by email nulls last").fetchall()
        assert profiles == [(users[0], "a@x.ao", "Ana", "active", 0), (users[1], "b@x.ao", None, "active", 0),
                            (users[2], None, None, "active", 0)]
        roles = conn.execute("select user_id, role::text from public.user_roles").fetchall()
        assert sorted(roles) == sorted((u, "user") for u in users)
        assert conn.execute("select prosrc from pg_proc where oid = 'auth.uid()'::regprocedure").fetchone()[0] \
            == original_uid
        assert conn.execute("select obj_description('auth.uid()'::regprocedure, 'pg_proc')").fetchone()[0] is None
        # Missing pieces were added as shims, and new users still get a profile.
        assert conn.execute("select to_regprocedure('auth.jwt()') is not null"
                            " and to_regclass('auth.sessions') is not null").fetchone()[0]
        new = uuid.uuid4()
        conn.execute("insert into auth.users (id, email) values (%s, 'new@x.ao')", [new])
        assert conn.execute("select count(*) from public.profiles where user_id = %s", [new]).fetchone()[0] == 1

    migrate.run("downgrade", empty_db_url, "base")
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("select count(*) from auth.users").fetchone()[0] == 4
        assert conn.execute("select prosrc from pg_proc where oid = 'auth.uid()'::regprocedure").fetchone()[0] \
            == original_uid
        # Only the shims we added are gone, with our trigger on their table.
        assert conn.execute("select to_regprocedure('auth.jwt()'), to_regprocedure('auth.role()'),"
                            " to_regclass('auth.sessions')").fetchone() == (None, None, None)
        assert conn.execute("select count(*) from pg_trigger where tgrelid = 'auth.users'::regclass"
                            " and not tgisinternal").fetchone()[0] == 0
        assert conn.execute("select to_regnamespace('smsao')").fetchone()[0] is None


def test_minimal_existing_auth_users_keep_working(empty_db_url):
    """An auth.users with only the contract's columns: backfill and sign-up both work."""
    old, new = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("create schema auth")
        conn.execute("create table auth.users (id uuid primary key, email text, created_at timestamptz default now())")
        conn.execute("insert into auth.users (id, email) values (%s, 'old@x.ao')", [old])
    migrate.run("upgrade", empty_db_url, "head")
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("insert into auth.users (id, email) values (%s, 'new@x.ao')", [new])
        assert conn.execute("select p.user_id, p.email, p.full_name, r.role::text from public.profiles p"
                            " join public.user_roles r using (user_id) order by p.email desc").fetchall() \
            == [(old, "old@x.ao", None, "user"), (new, "new@x.ao", None, "user")]


@pytest.mark.parametrize("action", ["upgrade", "downgrade"])
def test_unknown_revision_is_a_user_error(empty_db_url, action):
    with pytest.raises(UserError) as excinfo:
        migrate.run(action, empty_db_url, "no_such_rev")
    message = str(excinfo.value)
    assert "no_such_rev" in message and "migrate history" in message
    assert version(empty_db_url) in (None, [])


def test_downgrade_from_head_restores_the_previous_schema_exactly(cluster, empty_db_url):
    """upgrade head -> downgrade one step yields what upgrading to that step yields: a
    revision that changes released functions puts their earlier definitions back."""
    script = ScriptDirectory.from_config(migrate.alembic_config(""))
    previous = script.get_revision(HEAD).down_revision
    migrate.run("upgrade", empty_db_url, previous)
    expected = pg_dump(empty_db_url, "--exclude-schema", migrate.VERSION_TABLE_SCHEMA)
    migrate.run("upgrade", empty_db_url, "head")
    migrate.run("downgrade", empty_db_url, previous)
    assert pg_dump(empty_db_url, "--exclude-schema", migrate.VERSION_TABLE_SCHEMA) == expected
