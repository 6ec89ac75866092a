"""`smsao-db verify`: passes on a good database, fails on each kind of sabotage, changes nothing."""
from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from support import PROJECT_DIR, login_url
from runner.errors import UserError
from runner.verify import CHECKS, verify


def failures(url: str) -> dict[str, str]:
    return {r.name: r.detail for r in verify(url) if not r.passed}


def failed_areas(url: str) -> set[str]:
    return {r.area for r in verify(url) if not r.passed}


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from runner.cli import main; main()", "verify",
                           "--database-url", url, *args],
                          capture_output=True, text=True, timeout=120, cwd=PROJECT_DIR,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR), "COLUMNS": "200"})


def test_a_good_database_passes_every_check(db):
    results = verify(db.url)
    assert len(results) == len(CHECKS)
    assert [(r.name, r.detail) for r in results if not r.passed] == []


def test_cli_prints_the_table_and_exits_0_when_all_pass(db):
    proc = cli(db.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"all {len(CHECKS)} checks passed" in proc.stdout
    assert "PASS" in proc.stdout and "FAIL" not in proc.stdout


def snapshot_of_everything(db) -> dict:
    tables = [t for (t,) in db.sql("select format('%I.%I', schemaname, relname) from pg_stat_user_tables "
                                   "where schemaname in ('public', 'auth', 'smsao') order by 1")]
    return {t: db.sql(f"select md5(coalesce(string_agg(x::text, ',' order by x::text), '')) from {t} x")[0][0]
            for t in tables}


def test_verify_changes_nothing_and_sends_no_notification(db):
    # Real data of every kind verify touches, including rows the cleanup would delete.
    uid = db.create_user(credits=50)
    db.sql("insert into public.otp_codes (phone, code_hash, expires_at) "
           "values ('+244900000001', 'h', now() - interval '3 hours')")
    db.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('gw', 'SMSAO', true)")
    db.sql("insert into public.contacts (user_id, phone) values (%s, '+244900000002')", [uid])
    db.sql("insert into public.function_call_audit (function_name, outcome, created_at) "
           "values ('old', 'ok', now() - interval '3 years')")
    before = snapshot_of_everything(db)
    with db.connect() as listener:
        listener.execute("listen cache_invalidation")
        listener.execute("listen system_alerts")
        results = verify(db.url)
        assert list(listener.notifies(timeout=0.5)) == []
    assert snapshot_of_everything(db) == before
    assert results  # it did run


# -- sabotage: each must be caught ----------------------------------------------------------
def test_rls_disabled_on_one_table_fails(db):
    db.sql("alter table public.campaigns disable row level security")
    failed = failures(db.url)
    assert "campaigns" in failed["RLS enabled on every contract table"]
    assert "campaigns" in failed["a user reads their own rows and no one else's"]


def test_rls_disabled_on_an_admin_only_table_fails(db):
    db.sql("alter table public.function_call_audit disable row level security")
    failed = failures(db.url)
    assert "function_call_audit" in failed["RLS enabled on every contract table"]
    assert "function_call_audit" in failed["audit, monitoring and OTP rows: hidden from users, audits readable by admins"]


def test_a_function_granted_to_anon_fails(db):
    db.sql("grant execute on function public.approve_credit_request(uuid) to anon")
    failed = failures(db.url)
    assert failed.keys() == {"each contract function is executable by exactly its roles"}
    assert "approve_credit_request: +anon" in failed["each contract function is executable by exactly its roles"]


def test_a_function_granted_to_public_fails(db):
    db.sql("grant execute on function public.request_credits(integer) to public")
    failed = failures(db.url)
    assert "public.request_credits(amount integer)" in failed["EXECUTE is not granted to PUBLIC"]
    assert "request_credits: +anon, +service_role" in failed["each contract function is executable by exactly its roles"]


def test_an_internal_function_granted_to_public_fails(db):
    db.sql("grant execute on function smsao.decide_credit_request(uuid, text, text) to public")
    assert "smsao.decide_credit_request" in failures(db.url)["EXECUTE is not granted to PUBLIC"]


def test_a_revoked_grant_fails(db):
    db.sql("revoke execute on function public.validate_user_session() from anon")
    detail = failures(db.url)["each contract function is executable by exactly its roles"]
    assert "validate_user_session: -anon" in detail


def test_a_dropped_policy_fails(db):
    db.sql("drop policy contacts_own on public.contacts")
    failed = failures(db.url)
    assert "contacts" in failed["a user reads their own rows and no one else's"]


def test_a_widened_policy_fails(db):
    db.sql("drop policy campaigns_select on public.campaigns")
    db.sql("create policy campaigns_select on public.campaigns for select to authenticated, anon using (true)")
    db.sql("grant select on public.campaigns to anon")
    failed = failures(db.url)
    assert "campaigns" in failed["a user reads their own rows and no one else's"]
    assert "campaigns" in failed["anon reads nothing and writes nothing"]


def test_a_table_grant_letting_users_set_credits_fails(db):
    db.sql("grant update (credits) on public.profiles to authenticated")
    assert "raising their own credits" in failures(db.url)["a user cannot write another user's rows"]


def test_a_broken_rate_limiter_fails(db):
    # Sabotage: the limiter admits everything.
    db.sql("""create or replace function public.enhanced_security_rate_limit(
                operation_type text, max_attempts integer default 5, window_minutes integer default 15)
              returns boolean language sql security definer set search_path = '' as $$ select true $$""")
    failed = failures(db.url)
    assert "admits exactly max_attempts, then refuses and records 'rate_limited' once per window" in failed
    assert "request_credits is audited, gated by session and rate limited" in failed


def test_a_session_check_that_ignores_status_fails(db):
    db.sql("""create or replace function public.validate_user_session() returns boolean
              language sql stable security definer set search_path = ''
              as $$ select auth.uid() is not null or auth.role() = 'service_role' $$""")
    assert "suspended user: True" in failures(db.url)["validate_user_session() accepts only live sessions of active users"]


def test_an_audit_table_open_to_deletes_fails(db):
    db.sql("drop trigger function_call_audit_append_only on public.function_call_audit")
    db.sql("grant delete on public.function_call_audit to service_role")
    detail = failures(db.url)["audit trails are append-only for every app role"]
    assert "delete function_call_audit as service_role" in detail


def test_a_cleanup_that_deletes_too_much_fails(db):
    # Sabotage: a naive cleanup that deletes OTPs as soon as they expire (the contract keeps 2 hours).
    db.sql("""create or replace function public.production_data_cleanup() returns integer
              language plpgsql security definer set search_path = '' as $$
              declare n integer;
              begin
                delete from public.otp_codes where expires_at < now();
                get diagnostics n = row_count;
                return n;
              end $$""")
    detail = failures(db.url)["production_data_cleanup deletes exactly past the retention boundaries"]
    assert "deleted inside retention: ['otp_codes']" in detail or "not deleted past retention" in detail


def test_one_failing_check_does_not_abort_the_others(db):
    db.sql("drop function public.validate_user_session()")  # breaks the session gate everywhere
    results = verify(db.url)
    assert len(results) == len(CHECKS)
    by_name = {r.name: r for r in results}
    assert not by_name["validate_user_session() accepts only live sessions of active users"].passed
    assert by_name["RLS enabled on every contract table"].passed
    assert by_name["EXECUTE is not granted to PUBLIC"].passed


def test_cli_exits_1_and_names_the_failure(db):
    db.sql("alter table public.sms_logs disable row level security")
    proc = cli(db.url)
    assert proc.returncode == 1
    assert "RLS disabled on: sms_logs" in proc.stdout
    assert "checks failed" in proc.stdout


def test_only_runs_the_matching_checks(db):
    proc = cli(db.url, "--only", "rate limit", "--json")
    assert proc.returncode == 0, proc.stderr
    import json
    areas = {r["area"] for r in json.loads(proc.stdout)}
    assert areas == {"rate limit"}


def test_a_login_that_cannot_act_as_the_app_roles_is_told_so_in_one_line(db, cluster):
    name = f"verify_{uuid.uuid4().hex[:8]}"
    db.sql(f"create role {name} login password 'Verify-Pass-1'")
    try:
        url = login_url(db.url, name, "Verify-Pass-1")
        with pytest.raises(UserError, match="may not `set role`"):
            verify(url)
        proc = cli(url)
        assert proc.returncode == 1
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    finally:
        db.sql(f"drop role {name}")


def test_an_unreachable_database_is_one_line(db):
    proc = cli("postgresql://postgres@127.0.0.1:1/nope")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot connect") and len(proc.stderr.strip().splitlines()) == 1


def test_an_unknown_area_is_refused(db):
    proc = cli(db.url, "--only", "rls,nonsense")
    assert proc.returncode == 1 and "unknown check area(s) nonsense" in proc.stderr
