"""Issue 19: the audit trails in monthly partitions. Every rule of the parent holds for a
statement aimed at a partition, no app role reaches a partition, a partition is dropped only
by the retention cleanup and only past 2 years, and the retention drops whole months while
the month across the cutoff keeps its exact batched delete."""
import psycopg
import pytest

from support import Caller

AUDIT_TABLES = ("admin_audit_logs", "pii_access_audit", "function_call_audit")
INSERT = {"admin_audit_logs": "insert into public.admin_audit_logs (action, created_at) values (%s, {at})",
          "pii_access_audit": "insert into public.pii_access_audit (table_name, created_at) values (%s, {at})",
          "function_call_audit": "insert into public.function_call_audit (function_name, outcome, created_at) "
                                 "values (%s, 'ok', {at})"}
TAG = {"admin_audit_logs": "action", "pii_access_audit": "table_name", "function_call_audit": "function_name"}


def add(db, table, at_sql, tag):
    db.sql(INSERT[table].format(at=at_sql), [tag])


def make_month(db, table, months_back: int) -> str:
    """The partition of the month `months_back` before the current one (UTC), made by hand."""
    start = db.one("select date_trunc('month', now(), 'UTC') - make_interval(months => %s)", [months_back])
    name = f"{table}_p{start:%Y_%m}"
    db.sql(f"create table public.{name} partition of public.{table} "   # DDL takes no parameters
           f"for values from ('{start.isoformat()}') to ('{start.isoformat()}'::timestamptz + interval '1 month')")
    return name


def partitions(db, table):
    return [r[0] for r in db.sql("select name from smsao.audit_partitions() where parent = %s order by name", [table])]


def secured(db, name) -> tuple:
    """(RLS on, any app role privilege, has the append-only trigger)."""
    return db.sql("""select c.relrowsecurity,
                            has_table_privilege('anon', c.oid, 'select, insert, update, delete, truncate')
                         or has_table_privilege('authenticated', c.oid, 'select, insert, update, delete, truncate')
                         or has_table_privilege('service_role', c.oid, 'select, insert, update, delete, truncate'),
                            exists (select from pg_trigger t where t.tgrelid = c.oid
                                    and t.tgname = 'audit_partition_append_only')
                       from pg_class c where c.oid = %s::regclass""", [f"public.{name}"])[0]


def test_every_audit_table_is_partitioned_by_month_with_created_at_in_its_key(db):
    for table in AUDIT_TABLES:
        assert db.one("select relkind from pg_class where oid = %s::regclass", [f"public.{table}"]) == "p"
        key = db.one("""select array_agg(a.attname::text order by k.i) from pg_constraint c,
                          unnest(c.conkey) with ordinality k(attnum, i)
                          join pg_attribute a on a.attnum = k.attnum
                        where c.conrelid = %s::regclass and c.contype = 'p' and a.attrelid = c.conrelid""",
                     [f"public.{table}"])
        # The key leads with the partition key (0013): it serves the scans by time, and no
        # second index on created_at is written per row.
        assert key == ["created_at", "id"]
        assert db.one("select count(*) from pg_index i where i.indrelid = %s::regclass and not i.indisprimary "
                      "and i.indkey[0] = (select attnum from pg_attribute where attrelid = i.indrelid "
                      "and attname = 'created_at')", [f"public.{table}"]) == 0
        names = partitions(db, table)
        assert f"{table}_default" in names
        # This month and three ahead exist, so today's calls never land in the default.
        ahead = db.one("select count(*) from smsao.audit_partitions() where parent = %s "
                       "and from_ts >= date_trunc('month', now(), 'UTC') "
                       "and from_ts < date_trunc('month', now(), 'UTC') + interval '4 months'", [table])
        assert ahead == 4
        add(db, table, "now()", "today")
        assert db.one(f"select count(*) from public.{table}_default") == 0


@pytest.mark.parametrize("table", AUDIT_TABLES)
def test_append_only_guard_fires_for_statements_aimed_at_a_partition(db, table):
    add(db, table, "now()", "x")
    part = db.one("select name from smsao.audit_partitions() where parent = %s "
                  "and now() >= from_ts and now() < to_ts", [table])
    for stmt in (f"update public.{part} set created_at = created_at", f"delete from public.{part}",
                 f"truncate public.{part}"):
        with pytest.raises(psycopg.Error) as exc:
            db.sql(stmt)                               # even the owner
        assert exc.value.sqlstate == "42501" and "append-only" in str(exc.value)
    assert db.one(f"select count(*) from public.{table}") == 1


def test_no_app_role_reaches_a_partition(any_db):
    """Plain and Supabase-shaped databases (default privileges grant ALL on new tables)."""
    db = any_db
    admin = Caller.user(db.create_user(admin=True))
    for table in AUDIT_TABLES:
        for name in partitions(db, table):
            assert secured(db, name) == (True, False, True), name
        part = partitions(db, table)[0]
        for caller in (Caller.service(), admin, Caller.anon("203.0.113.9")):
            for stmt in (f"select * from public.{part}", f"delete from public.{part}"):
                with pytest.raises(psycopg.Error) as exc:
                    db.as_(caller, stmt)
                assert exc.value.sqlstate == "42501"
        # The parent still works for those meant to use it.
        db.as_(Caller.service(), INSERT[table].format(at="now()"), ["via parent"])
        assert db.as_(admin, f"select count(*) from public.{table}")[0][0] == 1


def test_a_new_partition_is_secured_at_once_whoever_makes_it(any_db):
    db = any_db
    for table in AUDIT_TABLES:
        name = make_month(db, table, 40)               # by hand, as a DBA would
        assert secured(db, name) == (True, False, True)
    if db.one("select count(*) from pg_extension where extname = 'pg_partman'"):
        db.sql("update partman.part_config set premake = 6")
        db.sql("call partman.run_maintenance_proc()")  # pg_partman's own maintenance
        for table in AUDIT_TABLES:
            newest = partitions(db, table)[-2]           # [-1] is the default
            assert db.one("select to_ts from smsao.audit_partitions() where name = %s", [newest]) >= \
                db.one("select date_trunc('month', now(), 'UTC') + interval '6 months'")   # was 4
            assert secured(db, newest) == (True, False, True)


def test_without_pg_partman_the_package_makes_the_months_ahead(db):
    db.sql("drop extension if exists pg_partman cascade")
    assert db.one("select count(*) from smsao.cron_jobs() where jobname = 'smsao-partman-maintenance'") == 0
    made = db.one("select smsao.premake_audit_partitions(6)")
    assert made == 3 * 3                              # months 4, 5 and 6 ahead, for each table
    assert db.one("select smsao.premake_audit_partitions(6)") == 0
    for table in AUDIT_TABLES:
        for name in partitions(db, table):
            assert secured(db, name) == (True, False, True)
    with pytest.raises(psycopg.Error) as exc:
        db.sql("select smsao.premake_audit_partitions(-1)")
    assert exc.value.sqlstate == "22023"


def test_pg_partman_maintenance_is_a_job_of_its_own(db):
    if not db.one("select count(*) from pg_extension where extname = 'pg_partman'"):
        pytest.skip("pg_partman is not installed on this server")
    assert db.sql("select schedule, command from smsao.cron_jobs() where jobname = 'smsao-partman-maintenance'") \
        == [("45 2 * * *", "call partman.run_maintenance_proc()")]
    assert db.one("select count(*) from partman.part_config where retention is not null") == 0


def test_drop_guard_refuses_audit_partitions_outside_retention(db):
    old = make_month(db, "function_call_audit", 30)    # wholly past 2 years
    recent = make_month(db, "function_call_audit", 20)
    for stmt in (f"drop table public.{recent}", f"drop table public.{old}",
                 "drop table public.function_call_audit_default", "drop table public.function_call_audit"):
        with pytest.raises(psycopg.Error) as exc:
            db.sql(stmt)
        assert exc.value.sqlstate == "42501" and "kept 2 years" in str(exc.value), stmt
    with db.connect() as conn:
        conn.execute("begin")
        conn.execute("set local smsao.audit_retention = on")
        with pytest.raises(psycopg.Error) as exc:
            conn.execute(f"alter table public.function_call_audit detach partition public.{recent}")
            conn.execute(f"drop table public.{recent}")
        assert exc.value.sqlstate == "42501"
        conn.execute("rollback")
    assert db.one("select to_regclass(%s) is not null", [f"public.{recent}"])


@pytest.mark.parametrize("path", ["procedure", "function"])
def test_retention_drops_whole_months_and_deletes_the_straddling_one_exactly(db, path):
    olds = {t: make_month(db, t, 30) for t in AUDIT_TABLES}
    straddling = {t: db.one("select 'p' || to_char(date_trunc('month', now() - interval '2 years', 'UTC') "
                            "at time zone 'UTC', 'YYYY_MM')") for t in AUDIT_TABLES}
    for t in AUDIT_TABLES:
        db.sql(f"create table public.{t}_{straddling[t]} partition of public.{t} for values from "
               "(date_trunc('month', now() - interval '2 years', 'UTC')) to "
               "(date_trunc('month', now() - interval '2 years', 'UTC') + interval '1 month')")
        for i in range(50):
            add(db, t, f"date_trunc('month', now(), 'UTC') - interval '30 months' + interval '{i} hours'", "go")
        add(db, t, "now() - interval '2 years 1 second'", "go")          # in the straddling month
        add(db, t, "now() - interval '2 years' + interval '1 second'", "keep")
        add(db, t, "now() - interval '2 years 3 months'", "go")          # a month with no partition: the default
        add(db, t, "now()", "keep")
    dry = db.one("select public.production_data_cleanup_report()")
    assert dry["partitions_to_drop"] == {t: [olds[t]] for t in AUDIT_TABLES}
    assert all(dry["categories"][t] == 52 for t in AUDIT_TABLES)
    assert all(db.one(f"select count(*) from public.{t}") == 54 for t in AUDIT_TABLES)   # nothing deleted

    if path == "procedure":
        report = db.one("call smsao.run_data_cleanup(5000)")
        assert report["partitions_dropped"] == {t: [olds[t]] for t in AUDIT_TABLES}
        assert all(report["categories"][t] == 52 for t in AUDIT_TABLES)
    else:
        assert db.one("select public.production_data_cleanup()") == 3 * 52
    for t in AUDIT_TABLES:
        assert olds[t] not in partitions(db, t)
        assert f"{t}_{straddling[t]}" in partitions(db, t)
        assert db.sql(f"select {TAG[t]}, count(*) from public.{t} group by 1") == [("keep", 2)]


def test_cleanup_dry_run_names_the_months_it_would_drop(db):
    from cli_support import smsao_db
    old = make_month(db, "pii_access_audit", 27)
    add(db, "pii_access_audit", f"'{old[-7:-3]}-{old[-2:]}-02'::timestamptz", "go")
    dry = smsao_db("cleanup", "--dry-run", url=db.url)
    assert dry.returncode == 0, dry.stderr
    assert f"PII access audit: would drop 1 month partition(s): {old}" in dry.stdout
    assert old in partitions(db, "pii_access_audit")                     # nothing dropped
    done = smsao_db("cleanup", url=db.url)
    assert done.returncode == 0, done.stderr
    assert f"PII access audit: dropped 1 month partition(s): {old}" in done.stdout
    assert old not in partitions(db, "pii_access_audit")
    assert db.one("select count(*) from public.pii_access_audit") == 0
