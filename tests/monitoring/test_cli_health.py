"""`smsao-db health`, `cleanup` and `schedule` as commands: output and exit codes."""
import json

import pytest

from cli_support import smsao_db
from monitoring_support import add_config, add_sms, set_threshold
from support import login_url


def test_health_exit_codes_follow_nagios(db):
    add_config(db)
    uid = db.create_user()
    add_sms(db, uid, "failed", n=2)
    healthy = smsao_db("health", url=db.url)
    assert healthy.returncode == 0, healthy.stderr
    assert "HEALTHY" in healthy.stdout and "Failed SMS (24 h)" in healthy.stdout

    set_threshold(db, "failed_sms_24h", 2, 5)
    warning = smsao_db("health", url=db.url)
    assert warning.returncode == 1 and "WARNING" in warning.stdout
    assert "investigate_failed_sms" in warning.stdout

    db.sql("update public.sms_configurations set is_active = false")
    critical = smsao_db("health", "--json", url=db.url)
    assert critical.returncode == 2
    report = json.loads(critical.stdout)
    assert report["system_status"] == "critical"
    assert report["recommendations"] == ["configure_sms_gateway", "investigate_failed_sms"]
    assert report["metrics"]["failed_sms_24h"] == 2


def test_health_is_unknown_when_it_cannot_tell(empty_db_url):
    unreachable = smsao_db("health", url="postgresql://postgres@127.0.0.1:1/smsao")
    assert unreachable.returncode == 3
    assert unreachable.stderr.startswith("error: cannot connect") and "Traceback" not in unreachable.stderr
    as_json = smsao_db("health", "--json", url="postgresql://postgres@127.0.0.1:1/smsao")
    assert as_json.returncode == 3 and json.loads(as_json.stdout)["system_status"] == "unknown"
    not_migrated = smsao_db("health", url=empty_db_url)
    assert not_migrated.returncode == 3 and "not installed" in not_migrated.stderr


def test_health_as_a_role_that_may_not_run_it(db):
    db.sql("create role smsao_test_reader login password 'Reader-Pass-1'")
    try:
        url = login_url(db.url, "smsao_test_reader", "Reader-Pass-1")
        denied = smsao_db("health", url=url)
        assert denied.returncode == 3 and "not allowed" in denied.stderr
    finally:
        db.sql("drop role smsao_test_reader")


def test_cleanup_dry_run_then_real_run(db):
    db.sql("insert into public.otp_codes (phone, code_hash, expires_at) select '+244900000001', 'x', "
           "now() - interval '3 hours' from generate_series(1, 12)")
    db.sql("insert into public.admin_audit_logs (action, created_at) values ('old', now() - interval '3 years')")
    dry = smsao_db("cleanup", "--dry-run", "--json", url=db.url)
    assert dry.returncode == 0, dry.stderr
    counted = json.loads(dry.stdout)
    assert counted["dry_run"] is True and counted["total"] == 13
    assert counted["categories"] == {"otp_codes": 12, "admin_audit_logs": 1, "pii_access_audit": 0,
                                     "function_call_audit": 0, "contact_import_jobs": 0}
    assert db.one("select count(*) from public.otp_codes") == 12

    table = smsao_db("cleanup", "--dry-run", url=db.url)
    assert "expired OTP codes" in table.stdout and "would delete" in table.stdout

    done = smsao_db("cleanup", "--json", "--batch-size", "5", url=db.url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # The 12 OTPs share one expires_at: batches stay bounded by rows (an empty step up to that
    # key, then 5, 5 and 2), and the four other categories take one batch each.
    assert result["categories"] == counted["categories"] and result["batches"] == 4 + 4
    assert db.one("select count(*) from public.otp_codes") == 0


@pytest.mark.parametrize("args, message", [
    (("schedule", "bogus"), "unknown schedule action"),
    (("cleanup", "--batch-size", "0"), "--batch-size must be a positive integer"),
])
def test_bad_input_is_one_line_and_non_zero(db, args, message):
    result = smsao_db(*args, url=db.url)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_schedule_commands(db, cluster):
    # Four jobs, and pg_partman's maintenance where the server has it (revision 0011_scale).
    jobs = 4 + db.one("select count(*) from pg_extension where extname = 'pg_partman'")
    try:
        applied = smsao_db("schedule", "apply", url=db.url)
        assert applied.returncode == 0, applied.stderr
        assert applied.stdout.count("created") == jobs
        again = smsao_db("schedule", "apply", url=db.url)
        assert again.stdout.count("unchanged") == jobs
        status = smsao_db("schedule", "status", url=db.url)
        assert status.returncode == 0 and "no run yet" in status.stdout
        assert "smsao-performance-check" in smsao_db("schedule", "list", url=db.url).stdout
    finally:
        removed = smsao_db("schedule", "remove", url=db.url)
    assert removed.returncode == 0 and f"removed {jobs} jobs" in removed.stdout
    missing = smsao_db("schedule", "status", url=db.url)
    assert missing.returncode == 1 and "not scheduled" in missing.stdout
