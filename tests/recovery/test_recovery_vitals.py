"""Issue 15, items 6 and 7: backups and drills as vital signs (backup_age_s,
restore_drill_age_s, wal_archive_failing) and which servers get the package's own backup
jobs. On the shared test cluster, which does not archive; the archiving vital on a real
archiving cluster is in tests/recovery/test_recovery.py."""
from __future__ import annotations

import psycopg
import pytest

from monitoring_support import add_config
from support import SERVICE

CHECK = "select public.production_system_health_check()"
RECORD = "select smsao.record_recovery_run(%s, now() - %s::interval, now() - %s::interval, %s, %s)"
RECOVERY = ("wal_archive_failing", "backup_age_s", "restore_drill_age_s")


def record(db, kind: str, ago: str, ok: bool = True, error: str | None = None) -> None:
    db.sql(RECORD, [kind, ago, ago, ok, error])


def checks(db) -> tuple[dict, dict, list]:
    r = db.one(CHECK)
    return ({k: r["metrics"][k] for k in RECOVERY}, {k: r["checks"][k] for k in RECOVERY}, r["recommendations"])


def test_nothing_recorded_and_no_archiving_is_null_and_ok_never_zero(db):
    add_config(db)
    values, levels, codes = checks(db)
    assert values == {"wal_archive_failing": None, "backup_age_s": None, "restore_drill_age_s": None}
    assert set(levels.values()) == {"ok"} and codes == []
    rows = dict(db.sql("select metric, recommendation from smsao.health_thresholds where metric = any(%s)",
                       [list(RECOVERY)]))
    assert rows == {"wal_archive_failing": "check_wal_archiving", "backup_age_s": "take_backup",
                    "restore_drill_age_s": "run_restore_drill"}


@pytest.mark.parametrize("kind, metric, ago, level, code", [
    ("backup", "backup_age_s", "25 hours 59 minutes", "ok", None),
    ("backup", "backup_age_s", "26 hours 1 minute", "warning", "take_backup"),
    ("backup", "backup_age_s", "50 hours 1 minute", "critical", "take_backup"),
    ("drill", "restore_drill_age_s", "7 days 23 hours", "ok", None),
    ("drill", "restore_drill_age_s", "8 days 1 minute", "warning", "run_restore_drill"),
    ("drill", "restore_drill_age_s", "92 days 1 minute", "critical", "run_restore_drill"),
])
def test_the_age_of_the_newest_successful_run_decides_its_check(db, kind, metric, ago, level, code):
    add_config(db)
    record(db, kind, ago)
    record(db, kind, "1 minute", ok=False, error="pgbackrest backup failed: disk full")  # failures do not count
    values, levels, codes = checks(db)
    expected = db.one("select extract(epoch from %s::interval)", [ago])
    assert abs(float(values[metric]) - float(expected)) < 5
    assert levels[metric] == level
    assert (code in codes) if code else codes == []
    other = "restore_drill_age_s" if metric == "backup_age_s" else "backup_age_s"
    assert values[other] is None and levels[other] == "ok"


def test_a_fresh_run_clears_the_alarm(db):
    add_config(db)
    record(db, "backup", "3 days")
    assert checks(db)[1]["backup_age_s"] == "critical"
    record(db, "backup", "10 seconds")
    values, levels, _ = checks(db)
    assert levels["backup_age_s"] == "ok" and 0 <= values["backup_age_s"] < 60


def test_recording_refuses_bad_input_and_other_roles(db):
    for args, word in [(["nightly", "1 minute", "1 minute", True, None], "kind"),
                       ([None, "1 minute", "1 minute", True, None], "kind"),
                       (["backup", "1 minute", "2 minutes", True, None], "finished_at"),
                       (["backup", "1 minute", "1 minute", None, None], "ok")]:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match=word):
            db.sql(RECORD, args)
    # A failure without a reason still says it failed; a success keeps no error.
    record(db, "drill", "1 minute", ok=False)
    record(db, "drill", "1 minute", ok=True, error="ignored")
    assert db.sql("select ok, error, run_by from smsao.recovery_runs order by id") == [
        (False, "failed (no reason given)", "runner"), (True, None, "runner")]
    # Only the owner records (a row here silences the backup alerts); nobody else reads them.
    for role in ("service_role", "authenticated", "anon"):
        with db.connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"set role {role}")
            conn.execute(RECORD, ["backup", "1 minute", "1 minute", True, None])
        with db.connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"set role {role}")
            conn.execute("select count(*) from smsao.recovery_runs")


def test_service_role_reads_the_recovery_vitals_through_the_health_check(db):
    add_config(db)
    record(db, "backup", "30 hours")
    with db.connect() as conn:
        conn.execute("begin")
        conn.execute(f"set local role {SERVICE.role}")
        r = conn.execute(CHECK).fetchone()[0]
    assert r["checks"]["backup_age_s"] == "warning" and r["metrics"]["wal_archive_failing"] is None


def jobs(db) -> set[str]:
    return {name for (name,) in db.sql("select jobname from smsao.cron_jobs()")}


def test_backup_jobs_are_listed_only_for_the_cluster_up_configured(db):
    base = {"smsao-health-check", "smsao-performance-check", "smsao-data-cleanup", "smsao-cron-history-cleanup"}
    if db.one("select exists (select from pg_extension where extname = 'pg_partman')"):
        base.add("smsao-partman-maintenance")                  # 0011_scale, where pg_partman is installed
    # A server given by URL: `up` never configured it, so no backup job.
    assert jobs(db) == base
    # A copy of an embedded database on another cluster keeps the row, not the cluster.
    db.sql("insert into smsao.recovery_config (system_identifier, program) values (42, '/nowhere/x.sh')")
    assert jobs(db) == base
    db.sql("select smsao.configure_scheduled_recovery('/srv/smsao/.smsao/pgbackrest/scheduled-recovery.sh')")
    assert jobs(db) == base | {"smsao-backup", "smsao-restore-drill"}
    commands = dict(db.sql("select jobname, command from smsao.cron_jobs()"))
    assert commands["smsao-backup"] == "call smsao.run_scheduled_backup()"
    assert commands["smsao-restore-drill"] == "call smsao.run_scheduled_drill()"
    db.sql("select smsao.configure_scheduled_recovery(null)")
    assert jobs(db) == base
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="absolute path"):
        db.sql("select smsao.configure_scheduled_recovery('relative.sh')")


def test_a_scheduled_run_without_configuration_is_recorded_as_failed_and_raises(db):
    """The procedure commits the record before it raises: the failure is both a failed job
    run (cron_failures_1h) and a recorded failure."""
    with pytest.raises(psycopg.errors.RaiseException, match="scheduled backup failed: no scheduled backups"):
        db.sql("call smsao.run_scheduled_backup()")
    with pytest.raises(psycopg.errors.RaiseException, match="scheduled restore drill failed: no successful backup"):
        db.sql("call smsao.run_scheduled_drill()")
    assert db.sql("select kind, ok, run_by from smsao.recovery_runs order by id") == [
        ("backup", False, "pg_cron"), ("drill", False, "pg_cron")]


def test_table_count_comparison_leaves_out_health_counters_only(db):
    """Item 22, in SQL (the scheduled drill): a table that gains and loses rows during the
    backup is not compared by count; every other table still is."""
    problems = db.one("select smsao.table_count_problems(%s::jsonb, %s::jsonb, %s::jsonb)", [
        '{"smsao.health_counters": 3, "public.profiles": 10, "public.sms_logs": 7}',
        '{"smsao.health_counters": 9, "public.profiles": 10, "public.sms_logs": 5}',
        '{"smsao.health_counters": 8, "public.profiles": 10, "public.sms_logs": 8}'])
    assert problems == []
    problems = db.one("select smsao.table_count_problems(%s::jsonb, %s::jsonb, %s::jsonb)", [
        '{"public.profiles": 9, "public.sms_logs": 9}',
        '{"public.profiles": 10, "public.sms_logs": 5, "public.contacts": 1}',
        '{"public.profiles": 10, "public.sms_logs": 8, "public.contacts": 1}'])
    assert problems == ["public.contacts is missing",
                        "public.profiles: 9 rows restored, 10 in the live database at the backup",
                        "public.sms_logs: 9 rows restored, 5..8 in the live database during the backup"]


def test_the_dashboard_and_metrics_show_the_recovery_vitals():
    from datetime import datetime, timezone

    from runner.web import app as web

    metrics = {"backup_age_s": 93700.0, "restore_drill_age_s": None, "wal_archive_failing": 0}
    checks = {"backup_age_s": "warning", "restore_drill_age_s": "ok", "wal_archive_failing": "ok"}
    data = web.PageData(datetime.now(timezone.utc), {"report": {"metrics": metrics, "checks": checks}}, None, [], [])
    group = next(g for g in web.cards(data) if g.id == "recovery")
    assert [(c.key, c.label, c.value, c.level) for c in group.cards] == [
        ("backup_age_s", "Newest backup", "93,700 s", "warning"),
        ("restore_drill_age_s", "Newest restore drill", "-", "ok"),
        ("wal_archive_failing", "WAL segments failing to archive", "0", "ok")]
    # Base units spelled out; nothing for a vital that is not measurable (never a made-up 0).
    names = {m.name for m in web.HealthCollector._health_metrics(metrics)}
    assert names == {"smsao_backup_age_seconds", "smsao_wal_archive_failing_segments"}
