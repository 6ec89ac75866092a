"""An upgrade with data (issue 15, item 28), and released revisions pinned by checksum.

A database is built by the previous release's own frozen revision files (migrate to
RELEASED, the released head), filled through the product's write paths exactly as the app
and the backend make them (users through auth.users, credits requested and decided through
the RPCs, contacts and campaigns under RLS, SMS logs, OTPs and imports by the backend,
audit rows as the RPCs write them, snapshots and samples as pg_cron records them), then
migrated to head. Afterwards `verify` and `integrity` pass, and no row is lost: every table
keeps its row count and its primary keys, every balance its value.

While head is RELEASED the upgrade is a no-op and the test proves the fill and the checks;
it means something as soon as a newer revision exists. When a release ships, move RELEASED
to it and add its files to RELEASED_FILES."""
from __future__ import annotations

import hashlib
import uuid

import psycopg
import pytest

from cli_support import smsao_db
from conftest import CRON_DB
from monitoring_support import wait_for_run
from runner import migrate, schedule
from support import PROJECT_DIR, SERVICE, Caller, request

RELEASED = "0013_scale_speed"
VERSIONS = PROJECT_DIR / "alembic" / "versions"

# sha256 of every file of every released revision: a released migration never changes what
# it applies (ENGINEERING.md), so none of these may be edited, removed or joined by another.
RELEASED_FILES = {
    "0001_foundation.py": "a891b6d2b6092c780181cbd2665e6a7afde5a24d821927a1eb21a02f62377482",
    "0001_foundation/down.sql": "ff36a9ea82d2f3550f15905a18abd2443f8d0ba84473b5d8482dd9cfb92d9bfa",
    "0001_foundation/up.sql": "f6f9178c0ae6d7fd08233784a1216d22c887362126e66bb8e96aad7ed0afe999",
    "0002_security.py": "a9d89d6aa182b27a7611b8d270e088d773fa9cac2b73fcb512113ccc9ca8cb42",
    "0002_security/down.sql": "1955fb2fe9111c8a79f17747bcf5aee03028b6ca943357645af47b768dc262ae",
    "0002_security/up.sql": "2858b3b5026db34b28fee7665bba39a98928767d0e278603eb335e528e0b5bd7",
    "0003_monitoring.py": "ac62110ef2dcc7efd32ffa5c0e44cbcabbefbdec92f097ecb9c979ed54d60649",
    "0003_monitoring/down.sql": "80a66d500af87be657f92ce09c125169501764c8e12eaeea74d7b263cc035dae",
    "0003_monitoring/up.sql": "0f45138cd31bca46c10da0b6dab9ddc9b51987fa42044ec1bfece8ab7147454d",
    "0004_operator.py": "c4137128249511cb1f45f9392af52f065783a7aa7891d195f1d06b45419b2462",
    "0004_operator/down.sql": "22256b1d89080c9a0e39fcf752d4bfa971a14b08ab7abc144232c47591ff157f",
    "0004_operator/up.sql": "85a51b8104395ab0aad4c662acf5654ff8f011092b2a375de13c7acde8c9f3e0",
    "0005_hardening.py": "4213cfa76efad07fcb916817477f1c9461efbb3049931b1437c4a01e83e955a6",
    "0005_hardening/down.sql": "78f79345b044a6ace189554ba09977e52b216686e254ad9140f1ccdd2428a6ae",
    "0005_hardening/pre.sql": "3d586ff3a19babc880025617250fd928e278e58935579f03a7a1317da63e1776",
    "0005_hardening/restore.sql": "02110b5183f4e696dc1e7b7be76e725cdcd3a7e704dd4f808e78fea8fe7c0109",
    "0005_hardening/up.sql": "6518e4a8de632ad75d63bf11ba26e3748f80aa6601acbe1b4396a043a5d9067e",
    "0006_vitals.py": "81339cec892e42cdec44c408509a966e6d27cc1863fdbd38e1dbf53b899e6f4f",
    "0006_vitals/down.sql": "b441690fcf7e3843f4cafdd2cef74c0ecd0a14041624c74ebd96cab86774375a",
    "0006_vitals/restore.sql": "648e90092d5cc2019507f5a7f14289ece968b90ef0148db49c58ba68c5aab33a",
    "0006_vitals/up.sql": "b148af6cd3de70937adad718aa14a2276882a475b4572e4c9eb5f1060a3fed95",
    "0007_alive/down.sql": "ce2de2f651569c56d22a6dba1e75b87d924806feae306f1f2864bba148bed035",
    "0007_alive/restore.sql": "66914c818b5f2978a5e8608436b9d3a24fbbc7d2ea410085927fa28a8fa5c3cf",
    "0007_alive/up.sql": "4eac63adda4bf2be6ebf1decf0fa085715b1bc2ed1be5ce3ec06982f8890ba4b",
    "0007_alive.py": "5378f6346e9bca15f293b2741ed8ea34c038141b1762f2b426d18e31adc11163",
    "0008_pgtap/down.sql": "bbe0c001e070f36ce4370fb07e6c1662b98e7feaf41c0647de1bc5edd1d79396",
    "0008_pgtap/restore.sql": "1115a3fd5b21dc1e42de21b447a0fe2dbea51c9c46a38b2ed5e69b8cddd2cc78",
    "0008_pgtap/up.sql": "a161956c23f21ee2838284c8470cd7654652e7eb38488a28ddbed0e4cc56267c",
    "0008_pgtap.py": "840876372d7973e6b910f88aabe6b3a5a89d0f1e7bcc69f1fc6b0d79d74ca226",
    "0009_replication/down.sql": "9df26a8c889a34aeacb5da718e7a9d72eb43bdd4ab04df39d4918afbba9a0e3f",
    "0009_replication/restore.sql": "11c10a6f5435854be1ac07835da14fe31cd4dc15d183cf15ec9dc23a5663b0a7",
    "0009_replication/up.sql": "c0ab98902856c212fd15e93b750c7616ed70dbd23b3812bd840a5fa2e31eba87",
    "0009_replication.py": "281e49012ecd60617d0aea81d73e75716543913369b4af8454db538c54f712cc",
    "0010_analytics/down.sql": "bfe0831f6ad7c488700dbd495820da42531acd4a8b0444ad4310227154127d25",
    "0010_analytics/up.sql": "9de78b1a597d5ceeac06fb6db4f6bffb9266ea07c21686d56e39e8534f066743",
    "0010_analytics.py": "8e8ad3436a6a73cb92480dbc3811b66766434c6c1f07ec464321cd8774352ea2",
    "0011_scale/down.sql": "977e7fe81582c586069e652c8cf86aeb1613f8e60acac3b0b9e19c05a1ef3fd8",
    "0011_scale/restore.sql": "e24838c2ff732da5e771c4581917d4cfcd81cda2399356dfb7059add13afb4f5",
    "0011_scale/up.sql": "25b1502afe4943a7d1439c64a9a9fea2b30a4a499e4242fd6262472bc2dab871",
    "0011_scale.py": "6d5a6a468c6f04b651dadef51a85b76ffaccd4966895ce24868be2d38b2f3f46",
    "0012_analytics_speed.py": "ebe5b36542a2e5567f621360f041fed3963d3b6db6ef156f711e0bacf23eb7f5",
    "0012_analytics_speed/down.sql": "0d2230e1d5de5522bb3ed343f05ccd2aea8ade064268fe172a5261ba6c01be36",
    "0012_analytics_speed/down_after_restore.sql": "47c83506f06228d497b73526f119c5e2b4bde07fdd0eccaa58500c98c910c566",
    "0012_analytics_speed/restore.sql": "b47f5d652dd1987d184a4d92181565fd997344c397b7ed1243a2416cce0f672e",
    "0012_analytics_speed/up.sql": "2b68945245b800fc8d23c5e0746549e3301e1a0baab947d733d206344d435fe6",
    "0013_scale_speed.py": "d58596080b1c30ae7541de5bfdc337de23a37ab17ee7c7ba23d66455fe2c3361",
    "0013_scale_speed/down.sql": "f3bb3aff4a491751788bc776efa2638be627cb1ffab26b471e08c82c3e44b2bf",
    "0013_scale_speed/restore.sql": "e0f29062b8dd621330c3978971edbd7b4c664a805617f1e7af9a3726a2814221",
    "0013_scale_speed/up.sql": "27ddd82b6c4f1e8c36bbe6b58d63dd9ae21e1963c947d5c4b85c20dece05cfe2",
}
RELEASED_REVISIONS = sorted({name.split("/")[0].removesuffix(".py") for name in RELEASED_FILES})


# -- released revisions are pinned -------------------------------------------------------------
def released_files_on_disk() -> dict[str, str]:
    found = {}
    for rev in RELEASED_REVISIONS:
        paths = [VERSIONS / f"{rev}.py", *(p for p in (VERSIONS / rev).rglob("*")
                                           if p.is_file() and "__pycache__" not in p.parts)]
        for path in paths:
            if path.exists():
                found[path.relative_to(VERSIONS).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_released_revisions_are_unchanged():
    on_disk = released_files_on_disk()
    edited = sorted(name for name, digest in RELEASED_FILES.items() if on_disk.get(name, digest) != digest)
    removed = sorted(set(RELEASED_FILES) - set(on_disk))
    added = sorted(set(on_disk) - set(RELEASED_FILES))
    problems = [f"{what}: {', '.join(names)}" for what, names in (
        ("edited", edited), ("removed", removed), ("added to a released revision", added)) if names]
    assert not problems, ("released migration files changed (" + "; ".join(problems) + "). A released revision "
                          "never changes: put the change in a new revision (scripts/freeze_sql.py)")


def test_released_head_is_in_the_history():
    """RELEASED names a real revision, and every revision up to it is pinned."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(migrate.alembic_config(""))
    chain = [r.revision for r in scripts.iterate_revisions(RELEASED, "base")]
    assert sorted(chain) == RELEASED_REVISIONS


# -- the data, written the way the product writes it ---------------------------------------------
def as_auth_service(conn: psycopg.Connection, email: str) -> uuid.UUID:
    """A sign-up, as Supabase's auth service makes it (the profile comes from the trigger)."""
    uid = uuid.uuid4()
    conn.execute("insert into auth.users (id, email) values (%s, %s)", [uid, email])
    conn.execute("insert into auth.sessions (id, user_id) values (%s, %s)", [uuid.uuid4(), uid])
    return uid


def fill(url: str) -> dict:
    """A little of everything the product writes; returns what the test needs to refer to."""
    with psycopg.connect(url, autocommit=True) as conn:
        admin = as_auth_service(conn, "admin@upgrade.ao")
        request(conn, SERVICE, "insert into public.user_roles (user_id, role) values (%s, 'admin')", [admin])
        users = [as_auth_service(conn, f"user{i}@upgrade.ao") for i in range(8)]
        as_admin, as_user = Caller.user(admin), [Caller.user(u) for u in users]
        # Analytics (0010): a price in force, a month's spend, and one custom event sent to GA4.
        request(conn, as_admin, "insert into public.credit_prices (valid_from, price_per_credit) "
                                "values (now() - interval '1 year', 10)")
        request(conn, as_admin, "insert into public.acquisition_spend (month, channel, amount) "
                                "values (date_trunc('month', now())::date, 'radio', 500)")
        request(conn, as_admin, "select public.set_ga4_export('opened_app', true)")

        # No gateway yet: the first snapshot is critical and raises an alert (pg_cron's job).
        request(conn, SERVICE, "select public.record_health_snapshot()")
        request(conn, SERVICE, "insert into public.sms_configurations (gateway_name, sender_id, is_active) "
                               "values ('gateway-a', 'SMSAO', true), ('gateway-b', 'BACKUP', false)")
        for i, caller in enumerate(as_user):
            # Profile self-update, under RLS (name and phone are the user's to set).
            request(conn, caller, "update public.profiles set full_name = %s, phone = %s where user_id = %s",
                    [f"User {i}", f"+24492300{i:04d}", caller.sub])
            # Credits: requested through the RPC, decided by the admin through theirs.
            approved = request(conn, caller, "select public.request_credits(%s)", [100 * (i + 1)])[0][0]
            rejected = request(conn, caller, "select public.request_credits(%s)", [50])[0][0]
            request(conn, caller, "select public.request_credits(%s)", [25])  # left pending
            request(conn, caller, "select public.track_event('opened_app', %s::jsonb)", [f'{{"screen": "s{i}"}}'])
            request(conn, as_admin, "select public.approve_credit_request(%s)", [approved])
            request(conn, as_admin, "select public.reject_credit_request(%s, %s)", [rejected, "duplicate"])
            # Contacts: one multi-row insert, an update, a delete (each one statement, as the app does).
            request(conn, caller, "insert into public.contacts (user_id, name, phone, email) "
                                  "select %s, 'Contact ' || n, '+2449' || lpad(n::text, 8, '0'), null "
                                  "from generate_series(1, 6) n", [caller.sub])
            request(conn, caller, "update public.contacts set email = 'c1@upgrade.ao' "
                                  "where user_id = %s and name = 'Contact 1'", [caller.sub])
            request(conn, caller, "delete from public.contacts where user_id = %s and name = 'Contact 6'",
                    [caller.sub])
            campaign = request(conn, caller, "insert into public.campaigns (user_id, name, message) "
                                             "values (%s, %s, 'Hello') returning id", [caller.sub, f"C{i}"])[0][0]
            request(conn, caller, "insert into public.contact_import_jobs (user_id, total_rows) values (%s, 6)",
                    [caller.sub])
            # The sending backend: SMS logs of the campaign (some failed) and an OTP.
            request(conn, SERVICE, "insert into public.sms_logs (user_id, campaign_id, recipient, message, status, "
                                   "error_message) select %s, %s, '+2449' || lpad(n::text, 8, '0'), 'Hello', "
                                   "case when n %% 4 = 0 then 'failed' else 'delivered' end, "
                                   "case when n %% 4 = 0 then 'gateway timeout' end "
                                   "from generate_series(1, 10) n", [caller.sub, campaign])
            request(conn, SERVICE, "insert into public.otp_codes (user_id, phone, code_hash, purpose, expires_at) "
                                   "values (%s, %s, md5('123456'), 'login', now() + interval '5 minutes')",
                    [caller.sub, f"+24492300{i:04d}"])
            request(conn, SERVICE, "update public.contact_import_jobs set status = 'completed', processed_rows = 6, "
                                   "completed_at = now() where user_id = %s", [caller.sub])
        # Admin work that writes the other audit trails.
        request(conn, as_admin, "select public.admin_get_user_details(%s)", [users[0]])
        request(conn, as_admin, "select public.admin_set_user_status(%s, 'suspended')", [users[1]])
        # A user whose account is deleted: their SMS logs stay, orphaned and accounted for.
        conn.execute("delete from auth.users where id = %s", [users[7]])
        # What pg_cron records every few minutes.
        for _ in range(2):
            request(conn, SERVICE, "select public.record_health_snapshot()")
            request(conn, SERVICE, "select public.record_performance_sample()")
    return {"admin": admin, "users": users}


# -- what must survive ---------------------------------------------------------------------------
SCHEMAS = ("public", "auth", "smsao")


def tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute(
        "select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = any(%s) and c.relkind in ('r', 'p') and not c.relispartition order by 1, 2",
        [list(SCHEMAS)]).fetchall()


def primary_key(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid "
        "and a.attnum = any(i.indkey) where i.indrelid = format('%%I.%%I', %s::text, %s::text)::regclass "
        "and i.indisprimary order by array_position(i.indkey, a.attnum)", [schema, table]).fetchall()]


AUDIT = ("admin_audit_logs", "pii_access_audit", "function_call_audit")
# The rate limiter's rings of up to 100 attempts move from rate_limit_hits onto their key rows
# in 0011_scale: that table's rows change form, not content (tests/test_scale_upgrade.py
# checks that the limiter forgets no attempt).
RESHAPED = ("smsao.rate_limit_hits",)


def inventory(url: str) -> dict[str, tuple[int, str | None]]:
    """Per table: its row count and a digest of its primary keys (None without one)."""
    from psycopg import sql

    result = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for schema, table in tables(conn):
            name = sql.Identifier(schema, table)
            count = conn.execute(sql.SQL("select count(*) from {}").format(name)).fetchone()[0]
            # A partitioned table's key carries its partition column too (0011_scale): the
            # rows are the same ones when their keys without it are.
            keys = [k for k in primary_key(conn, schema, table) if k != "created_at" or table not in AUDIT]
            digest = None
            if keys:
                row = sql.SQL("({})").format(sql.SQL(", ").join(map(sql.Identifier, keys)))
                digest = conn.execute(sql.SQL("select md5(coalesce(string_agg({r}::text, ',' order by {r}::text), '')) "
                                              "from {t}").format(r=row, t=name)).fetchone()[0]
            result[f"{schema}.{table}"] = (count, digest)
    return result


# The package's own configuration, to which a revision may add rows (a new vital's thresholds).
CONFIGURATION = ("smsao.health_thresholds", "smsao.operation_limits")


def rows_of(url: str, table: str) -> set[str]:
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        return {r[0] for r in conn.execute(sql.SQL("select t::text from {} t").format(
            sql.Identifier(*table.split(".")))).fetchall()}


def rows_kept(url: str, table: str, rows: set[str]) -> bool:
    """Every row the table had is still there, unchanged (new rows are allowed)."""
    return rows <= rows_of(url, table)


def balances(url: str) -> dict:
    """Per user: the balance and the sum of the ledger."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "select p.user_id, p.credits, coalesce(sum(t.amount), 0)::integer from public.profiles p "
            "left join public.credit_transactions t on t.user_id = p.user_id group by p.user_id, p.credits"
        ).fetchall()
    return {user: (credits, ledger) for user, credits, ledger in rows}


def version(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(f"select version_num from {migrate.VERSION_TABLE_SCHEMA}.alembic_version").fetchone()[0]


@pytest.fixture(params=["plain", "supabase"])
def released_db(request, empty_db_url):
    """A database built by the released revisions' own files, on plain PostgreSQL and on one
    shaped like a Supabase project (its auth schema and default privileges)."""
    if request.param == "supabase":
        from conftest import SUPABASE_SHAPE

        with psycopg.connect(empty_db_url, autocommit=True) as conn:
            conn.execute(SUPABASE_SHAPE.read_text())
    migrate.run("upgrade", empty_db_url, RELEASED)
    assert version(empty_db_url) == RELEASED
    return empty_db_url


def test_upgrade_from_the_released_head_keeps_every_row(released_db):
    url = released_db
    people = fill(url)
    before, money = inventory(url), balances(url)
    snapshot = {t: rows_of(url, t) for t in CONFIGURATION}
    # The fill reached every table the app writes: an empty one would prove nothing.
    for table in ("profiles", "user_roles", "sms_configurations", "credit_requests", "credit_transactions",
                  "contacts", "campaigns", "sms_logs", "otp_codes", "contact_import_jobs", "admin_audit_logs",
                  "pii_access_audit", "function_call_audit", "system_health_snapshots", "system_alerts",
                  "performance_samples", "credit_prices", "acquisition_spend", "business_events"):
        assert before[f"public.{table}"][0] > 0, f"the fill wrote nothing to public.{table}"
    assert money[people["users"][0]] == (100, 100) and money[people["users"][6]] == (700, 700)

    upgraded = smsao_db("migrate", "upgrade", "head", url=url, timeout=600)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    from alembic.script import ScriptDirectory

    assert version(url) == ScriptDirectory.from_config(migrate.alembic_config("")).get_current_head()

    after = inventory(url)
    # A revision may add rows to the package's configuration (thresholds of new vital signs):
    # there every row must stay; everywhere else the rows are exactly those of before.
    lost = {t: (before[t], after.get(t)) for t in before if t not in RESHAPED
            and after.get(t) != before[t] and not (t in CONFIGURATION and rows_kept(url, t, snapshot[t]))}
    assert not lost, f"tables whose rows changed in the upgrade (before, after): {lost}"
    assert balances(url) == money

    checked = smsao_db("integrity", url=url, timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    verified = smsao_db("verify", url=url, timeout=600)
    assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr
    # verify changes nothing it leaves behind.
    assert inventory(url) == after


@pytest.mark.parametrize("released_db", ["plain"], indirect=True)
def test_jobs_scheduled_on_the_released_head_run_after_the_upgrade(released_db, cluster):
    """A DBA's database has its pg_cron jobs when the new wheel migrates it: a job that is
    scheduled must still be a job that runs, on the new revision's functions."""
    url, cron_url = released_db, cluster.url(CRON_DB)
    fill(url)
    schedule.apply(url)
    try:
        upgraded = smsao_db("migrate", "upgrade", "head", url=url, timeout=600)
        assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
        with psycopg.connect(cron_url, autocommit=True) as conn:
            last_run, upgraded_at = conn.execute("select coalesce(max(runid), 0), now() from cron.job_run_details"
                                                 ).fetchone()
        wait_for_run(cron_url, "smsao-performance-check", "succeeded", last_run)
        with psycopg.connect(url, autocommit=True) as conn:
            stored = conn.execute("select count(*) from public.performance_samples where sampled_at >= %s",
                                  [upgraded_at]).fetchone()[0]
        assert stored >= 1, "the run after the upgrade stored no performance sample"
        problems = {s.job.jobname: s.problem for s in schedule.status(url) if s.problem}
        assert "smsao-performance-check" not in problems, problems
    finally:
        schedule.remove(url)
