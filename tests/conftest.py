"""A real PostgreSQL 15 with pg_cron, started once per test session by the project's own
embedded-cluster code; each test gets a fresh database cloned from a migrated template."""
from __future__ import annotations

import itertools
import os
import uuid
from pathlib import Path

import psycopg
import pytest
from hypothesis import settings
from pytest_postgresql.janitor import DatabaseJanitor

from runner import migrate
from runner.embedded import SUPERUSER, Cluster
from support import SERVICE, Caller, new_home, remove_new_home, request

TEMPLATE_DB = "smsao_template"
SUPABASE_TEMPLATE_DB = "smsao_supabase_template"
SUPABASE_SHAPE = Path(__file__).with_name("supabase_shape.sql")
CRON_DB = "postgres"  # pg_cron's one database; tests schedule into others
_names = itertools.count()

# CI runs the property tests with a fixed seed, so a red build is reproducible.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def cluster():
    home = new_home("smsao-test-")
    c = Cluster(home=home, cron_database=CRON_DB, settings={
        # Durability is not under test; speed is welcome.
        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        "max_connections": "200", "cron.max_running_jobs": "8",
    })
    c.start()
    with psycopg.connect(c.url(CRON_DB), autocommit=True) as conn:
        conn.execute("create extension if not exists pg_cron")
    yield c
    c.stop()
    remove_new_home(home)


@pytest.fixture(scope="session")
def cron_cluster_home():
    """A second cluster that preloads pg_cron for database `smsao` where nobody has
    created the extension yet: what a new server looks like to `schedule apply`."""
    home = new_home("smsao-fresh-cron-")
    c = Cluster(home=home, settings={"fsync": "off", "synchronous_commit": "off"})
    c.start()
    yield c
    c.stop()
    remove_new_home(home)


@pytest.fixture
def cron_not_created(cron_cluster_home):
    """That cluster with an empty database `smsao` and no pg_cron created; as found again after the test."""
    c = cron_cluster_home
    with psycopg.connect(c.url("postgres"), autocommit=True) as conn:
        conn.execute("drop database if exists smsao with (force)")
        conn.execute("create database smsao")
    yield c
    with psycopg.connect(c.url("postgres"), autocommit=True) as conn:
        conn.execute("drop database smsao with (force)")


def janitor(cluster: Cluster, dbname: str, template: str | None = None) -> DatabaseJanitor:
    return DatabaseJanitor(user=SUPERUSER, password=cluster.password, host="127.0.0.1", port=cluster.port,
                           dbname=dbname, template_dbname=template)


@pytest.fixture(scope="session")
def template_db(cluster):
    """A database migrated to head, cloned for every test that needs one."""
    with janitor(cluster, TEMPLATE_DB):
        migrate.run("upgrade", cluster.url(TEMPLATE_DB), "head")
        yield TEMPLATE_DB


@pytest.fixture(scope="session")
def supabase_template_db(cluster):
    """Like template_db, but migrated onto a database shaped like a new Supabase project
    (tests/supabase_shape.sql): its auth schema and its default privileges on public."""
    with janitor(cluster, SUPABASE_TEMPLATE_DB):
        with psycopg.connect(cluster.url(SUPABASE_TEMPLATE_DB), autocommit=True) as conn:
            conn.execute(SUPABASE_SHAPE.read_text())
        migrate.run("upgrade", cluster.url(SUPABASE_TEMPLATE_DB), "head")
        yield SUPABASE_TEMPLATE_DB


@pytest.fixture
def empty_db_url(cluster):
    """A database with nothing migrated: for migration tests."""
    name = f"smsao_t{next(_names)}"
    with janitor(cluster, name):
        yield cluster.url(name)


class Db:
    """A migrated database for one test, with a superuser connection and helpers."""

    def __init__(self, url: str):
        self.url = url
        self.conn = psycopg.connect(url, autocommit=True)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True)

    def sql(self, query: str, params=None) -> list[tuple]:
        cur = self.conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    def one(self, query: str, params=None):
        rows = self.sql(query, params)
        return rows[0][0] if rows else None

    def as_(self, caller: Caller, query: str, params=None) -> list[tuple]:
        return request(self.conn, caller, query, params)

    def create_user(self, *, admin: bool = False, status: str = "active", credits: int = 0,
                    email: str | None = None, phone: str | None = None) -> uuid.UUID:
        """A user as the auth service creates one (the profile comes from the trigger)."""
        uid = uuid.uuid4()
        self.sql("insert into auth.users (id, email) values (%s, %s)", [uid, email or f"{uid}@test.ao"])
        self.sql("update public.profiles set status = %s, phone = %s where user_id = %s", [status, phone, uid])
        if credits:
            self.sql("insert into public.credit_transactions (user_id, amount) values (%s, %s)", [uid, credits])
        if admin:
            self.sql("insert into public.user_roles (user_id, role) values (%s, 'admin')", [uid])
        return uid

    def create_session(self, user_id: uuid.UUID, not_after=None) -> uuid.UUID:
        sid = uuid.uuid4()
        self.sql("insert into auth.sessions (id, user_id, not_after) values (%s, %s, %s)", [sid, user_id, not_after])
        return sid


def cloned_db(cluster, template: str):
    name = f"smsao_t{next(_names)}"
    with janitor(cluster, name, template):
        d = Db(cluster.url(name))
        try:
            yield d
        finally:
            d.conn.close()


@pytest.fixture
def db(cluster, template_db):
    yield from cloned_db(cluster, template_db)


@pytest.fixture(params=["plain", "supabase"])
def any_db(request, cluster):
    """A migrated database of each shape: plain PostgreSQL, and Supabase's (the grants and
    RLS tests run on both)."""
    yield from cloned_db(cluster, request.getfixturevalue(
        "template_db" if request.param == "plain" else "supabase_template_db"))


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory):
    """(venv, wheel, seconds it took): the package's wheel in a clean virtualenv."""
    from wheel_support import install_wheel

    return install_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def service():
    return SERVICE
