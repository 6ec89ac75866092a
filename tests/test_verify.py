"""`smsao-db verify`: the package's pgTAP files (sql/tests) pass on a correct database of both
shapes, fail on each kind of sabotage with a description that names the broken rule, run
the same under `pg_prove`, and leave nothing observable behind."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from support import PROJECT_DIR, Caller, login_url
from runner import verify
from runner.errors import UserError
from runner.resources import TESTS_DIR
from runner.sqlsource import source_files

AREAS = ("structure_and_grants", "rls", "session", "rate_limit", "credits_ledger", "audit",
         "health_vitals", "cleanup", "scheduling", "cache_notifications")


def failing(url: str, only: list[str] | None = None) -> dict[str, str]:
    """Description of every failing test (or dead file) -> the file it is in."""
    out = {}
    for r in verify.run(url, only=only):
        out.update({a.description: r.name for a in r.failures})
        if r.died or (r.planned is not None and r.planned != len(r.assertions)):
            out[f"{r.name}: {r.detail}"] = r.name
    return out


def cli(url: str | None, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from runner.cli import main; main()", "verify",
                           *(["--database-url", url] if url else []), *args],
                          capture_output=True, text=True, timeout=180, cwd=PROJECT_DIR,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_DIR), "COLUMNS": "200"})


# -- the files -------------------------------------------------------------------------------
def test_one_file_per_area_in_order_each_a_rolled_back_plan():
    files = sorted(TESTS_DIR.glob("*.sql"))
    assert [re.sub(r"^\d\d_|\.sql$", "", f.name) for f in files] == list(AREAS)
    preambles = set()
    for f in files:
        text = f.read_text()
        statements = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("--")]
        assert statements[0] == "begin;", f.name
        assert re.search(r"^select plan\(\d+\);$", text, re.M), f.name
        assert statements[-2:] == ["select * from finish();", "rollback;"], f.name
        # Plain SQL: psql (pg_prove) and the runner (psycopg) run the same text.
        assert not re.search(r"^\s*\\", text, re.M), f"{f.name} holds a psql meta-command"
        preambles.add(text[text.index("-- ---- preamble"):text.index("-- ---- end of preamble ----")])
    assert len(preambles) == 1, "the preamble differs between files"


def test_the_test_files_are_not_schema_source():
    assert not [f for f in source_files() if "tests" in f.parts]


def test_path_prints_the_folder_of_the_files():
    proc = cli(None, "--path")
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == TESTS_DIR
    assert len(list(Path(proc.stdout.strip()).glob("*.sql"))) == len(AREAS)


# -- a correct database ------------------------------------------------------------------------
def test_a_correct_database_of_either_shape_passes_every_file(any_db):
    results = verify.run(any_db.url)
    assert [r.name for r in results] == sorted(f.name for f in TESTS_DIR.glob("*.sql"))
    assert [(r.name, r.detail) for r in results if not r.passed] == []
    assert all(r.planned == len(r.assertions) > 0 for r in results)
    assert sum(len(r.assertions) for r in results) > 400


def test_cli_prints_a_summary_per_file_or_tap_and_exits_0(db):
    proc = cli(db.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"all {len(AREAS)} test files passed" in proc.stdout
    assert re.search(r"PASS 02_rls\.sql\s+\d+ passed,\s+0 failed", proc.stdout)
    assert "FAIL" not in proc.stdout
    # --tap: one TAP document, each file a subtest.
    proc = cli(db.url, "--tap")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"1..{len(AREAS)}"
    assert [ln for ln in lines if not ln.startswith(" ")][1:] == \
        [f"ok {i} - {f.name}" for i, f in enumerate(sorted(TESTS_DIR.glob("*.sql")), 1)]
    assert "    # Subtest: 01_structure_and_grants.sql" in lines
    assert any(re.match(r"^    ok \d+ - RLS is enabled on public\.contacts$", ln) for ln in lines)


# -- nothing observable changes ------------------------------------------------------------
def observable_state(db) -> dict:
    """Every table's rows (md5), every rpc counter, and what exists in public and as extensions."""
    tables = [t for (t,) in db.sql("select format('%I.%I', schemaname, relname) from pg_stat_user_tables "
                                   "where schemaname in ('public', 'auth', 'smsao') order by 1")]
    state = {t: db.sql(f"select count(*), md5(coalesce(string_agg(x::text, ',' order by x::text), '')) from {t} x")[0]
             for t in tables}
    state["counters"] = db.sql("select c.relname, pg_sequence_last_value(c.oid) from pg_class c "
                               "where c.relnamespace = 'smsao'::regnamespace and c.relkind = 'S' "
                               "and c.relname like 'rpc\\_%' order by 1")
    state["schemas"] = db.sql("select nspname from pg_namespace order by 1")
    state["extensions"] = db.sql("select extname, extnamespace::regnamespace::text from pg_extension order by 1")
    state["public objects"] = db.sql("select count(*) from pg_class where relnamespace = 'public'::regnamespace "
                                     "union all select count(*) from pg_proc where pronamespace = 'public'::regnamespace")
    return state


def seed_production_like_data(db) -> None:
    """Real data of every kind the files touch, rows the cleanup would delete, and counters
    that have moved (a refusal counted before the run)."""
    uid = db.create_user(credits=50)
    admin = db.create_user(admin=True)
    db.sql("insert into public.otp_codes (phone, code_hash, expires_at) "
           "values ('+244900000001', 'h', now() - interval '3 hours')")
    db.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('gw', 'SMSAO', true)")
    db.sql("insert into public.contacts (user_id, phone) values (%s, '+244900000002')", [uid])
    db.sql("insert into public.function_call_audit (function_name, outcome, created_at) "
           "values ('old', 'ok', now() - interval '3 years')")
    rid = db.as_(Caller.user(uid), "select public.request_credits(10)")[0][0]
    db.as_(Caller.user(admin), "select public.approve_credit_request(%s)", [rid])
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.as_(Caller.user(uid), "select public.approve_credit_request(%s)", [rid])
    db.as_(Caller.service(), "select public.record_health_snapshot()")


def test_verify_leaves_no_row_no_counter_movement_no_alert_and_no_notification(any_db):
    seed_production_like_data(any_db)
    before = observable_state(any_db)
    assert dict(before["counters"])["rpc_approve_credit_request_refusals"] == 1  # the comparison can see a refusal
    with any_db.connect() as listener:
        listener.execute("listen cache_invalidation")
        listener.execute("listen system_alerts")
        results = verify.run(any_db.url)
        assert list(listener.notifies(timeout=0.5)) == []
    assert all(r.passed for r in results)
    after = observable_state(any_db)
    assert after == before
    assert not [s for (s,) in after["schemas"] if s.startswith("smsao_test")]


def test_without_the_mark_a_rolled_back_refusal_is_counted(db):
    """The control for the test above: the counters do see refusals that roll back."""
    uid = db.create_user()
    before = db.one("select pg_sequence_last_value('smsao.rpc_approve_credit_request_refusals')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.as_(Caller.user(uid), "select public.approve_credit_request(%s)", [uuid.uuid4()])
    assert (db.one("select pg_sequence_last_value('smsao.rpc_approve_credit_request_refusals')") or 0) \
        == (before or 0) + 1


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
def test_no_app_role_can_mark_its_transaction_as_a_verify_run(any_db, role):
    caller = {"anon": Caller.anon(), "authenticated": Caller.user(any_db.create_user()),
              "service_role": Caller.service()}[role]
    for statement in ("insert into smsao.verify_runs default values",
                      "select smsao.in_verify_run()",
                      "select count(*) from smsao.verify_runs"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            any_db.as_(caller, statement)


def test_a_committed_mark_mutes_no_other_caller(db):
    """A row committed by mistake names its own transaction: other callers are still counted."""
    db.sql("insert into smsao.verify_runs default values")
    uid = db.create_user()
    before = db.one("select coalesce(pg_sequence_last_value('smsao.rpc_approve_credit_request_refusals'), 0)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.as_(Caller.user(uid), "select public.approve_credit_request(%s)", [uuid.uuid4()])
    assert db.one("select pg_sequence_last_value('smsao.rpc_approve_credit_request_refusals')") == before + 1


def test_a_pgtap_installed_beforehand_is_used_and_left_alone(db):
    db.sql("create schema extensions")
    db.sql("create extension pgtap with schema extensions")
    assert all(r.passed for r in verify.run(db.url))
    assert db.sql("select extnamespace::regnamespace::text from pg_extension where extname = 'pgtap'") == [("extensions",)]
    assert db.one("select count(*) from pg_namespace where nspname like 'smsao_test%'") == 0


# -- sabotage: each is caught, by a test that names the broken rule -------------------------
# The grants and RLS sabotages run on both shapes (Supabase's default privileges are where
# grants go wrong); the behavioural ones on the plain shape, to keep the suite's time.
def test_rls_off_on_one_table_fails(any_db):
    any_db.sql("alter table public.campaigns disable row level security")
    failed = failing(any_db.url)
    assert failed["RLS is enabled on public.campaigns"] == "01_structure_and_grants.sql"
    assert "RLS is enabled on public.contacts" not in failed


def test_execute_on_an_admin_function_granted_to_anon_fails(any_db):
    any_db.sql("grant execute on function public.approve_credit_request(uuid) to anon")
    assert set(failing(any_db.url)) == {
        "Role anon should be granted no privileges on function public.approve_credit_request(uuid)"}


def test_a_policy_letting_a_user_read_another_users_contacts_fails(db):
    db.sql("create policy contacts_peek on public.contacts for select to authenticated using (true)")
    failed = failing(db.url)
    assert failed["a user cannot read another user's row in public.contacts"] == "02_rls.sql"
    assert "public.contacts has exactly its policies" in failed
    assert "a user cannot read another user's row in public.campaigns" not in failed


def test_a_disabled_ledger_trigger_fails(db):
    db.sql("alter table public.credit_transactions disable trigger credit_transactions_apply")
    failed = failing(db.url)
    assert failed["profiles.credits equals the sum of the user's ledger after ledger inserts and a direct adjustment"] \
        == "05_credits_ledger.sql"
    assert "approving 40 credits adds 40 to the balance" in failed


def test_a_rate_limit_that_admits_one_too_many_fails(db):
    db.sql("alter function public.enhanced_security_rate_limit(text, integer, integer) rename to exact_rate_limit")
    db.sql("""create function public.enhanced_security_rate_limit(
                    operation_type text, max_attempts integer default 5, window_minutes integer default 15)
                  returns boolean language sql security definer set search_path = ''
                  as $$ select public.exact_rate_limit(operation_type, max_attempts + 1, window_minutes) $$""")
    db.sql("grant execute on function public.enhanced_security_rate_limit(text, integer, integer) "
               "to anon, authenticated, service_role")
    failed = failing(db.url)
    assert failed["enhanced_security_rate_limit admits exactly max_attempts (3 of 5 calls), then refuses"] \
        == "04_rate_limit.sql"
    assert "request_credits: financial_transaction admits its limit, then raises PT429" in failed


def test_a_health_metric_that_lies_fails(db):
    db.sql("alter function public.production_system_health_check() rename to true_health_check")
    db.sql("""create function public.production_system_health_check() returns jsonb
                  language sql security definer set search_path = ''
                  as $$ select jsonb_set(r, '{metrics,total_users}',
                                         to_jsonb((r -> 'metrics' ->> 'total_users')::bigint + 1))
                        from public.true_health_check() r $$""")
    db.sql("grant execute on function public.production_system_health_check() to authenticated, service_role")
    failed = failing(db.url)
    assert failed["total_users, pending_credit_requests and active_sms_configs equal their recount"] \
        == "07_health_vitals.sql"


def test_a_session_check_that_ignores_status_fails(db):
    db.sql("""create or replace function public.validate_user_session() returns boolean
              language sql stable security definer set search_path = ''
              as $$ select auth.uid() is not null or auth.role() = 'service_role' $$""")
    failed = failing(db.url, only=["03_session.sql"])
    assert "a suspended user's session is invalid" in failed
    assert "an expired session is invalid" in failed


def test_an_audit_table_open_to_deletes_fails(db):
    db.sql("drop trigger function_call_audit_append_only on public.function_call_audit")
    db.sql("grant delete on public.function_call_audit to service_role")
    failed = failing(db.url, only=["06_audit.sql"])
    assert "service_role cannot delete public.function_call_audit (audit trails are append-only)" in failed
    assert "owner cannot delete public.function_call_audit (audit trails are append-only)" in failed


def test_a_cleanup_that_deletes_too_much_fails(db):
    db.sql("""create or replace function public.production_data_cleanup() returns integer
              language plpgsql security definer set search_path = '' as $$
              declare n integer;
              begin
                delete from public.otp_codes where expires_at < now();
                get diagnostics n = row_count;
                return n;
              end $$""")
    failed = failing(db.url, only=["08_cleanup.sql"])
    assert "an OTP 1h59 past expiry stays" in failed
    assert "production_data_cleanup deletes every seeded row past its retention" in failed


def test_a_missing_function_kills_its_file_only(db):
    db.sql("drop function public.validate_user_session()")
    results = {r.name: r for r in verify.run(db.url, only=["03_session.sql", "08_cleanup.sql"])}
    assert not results["03_session.sql"].passed
    assert "validate_user_session" in results["03_session.sql"].detail
    assert results["08_cleanup.sql"].passed


def test_cli_exits_1_and_names_the_failing_test(db):
    db.sql("alter table public.sms_logs disable row level security")
    proc = cli(db.url)
    assert proc.returncode == 1
    assert re.search(r"FAIL 01_structure_and_grants\.sql\s+\d+ passed,\s+1 failed", proc.stdout)
    assert "not ok" in proc.stdout and "RLS is enabled on public.sms_logs" in proc.stdout
    assert re.search(r"\d of 10 test files failed", proc.stdout)
    tap = cli(db.url, "--tap")
    assert tap.returncode == 1 and "not ok 1 - 01_structure_and_grants.sql" in tap.stdout


# -- the user's own files -----------------------------------------------------------------------
def write_extra(folder: Path, name: str, body: str, plan: int) -> None:
    """A user's test file in the same shape, relying on nothing the package's preamble makes."""
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(
        "begin;\ncreate schema mine;\ncreate extension if not exists pgtap with schema mine;\n"
        "select set_config('search_path', (select extnamespace::regnamespace::text from pg_extension "
        "where extname = 'pgtap') || ', public', true);\n"
        f"select plan({plan});\n{body}\nselect * from finish();\nrollback;\n")


def test_extra_adds_the_users_files_to_the_run(db, tmp_path):
    extra = tmp_path / "mine"
    write_extra(extra, "a_good.sql", "select has_table('public', 'campaigns', 'campaigns exist');", 1)
    write_extra(extra, "b_bad.sql", "select is(1 + 1, 3, 'my own rule about arithmetic');", 1)
    write_extra(extra, "c_dies.sql", "select nosuch_function();", 1)
    results = verify.run(db.url, extra, only=["01_structure_and_grants.sql"])
    assert [r.name for r in results] == ["01_structure_and_grants.sql", "a_good.sql", "b_bad.sql", "c_dies.sql"]
    by_name = {r.name: r for r in results}
    assert by_name["a_good.sql"].passed
    assert [a.description for a in by_name["b_bad.sql"].failures] == ["my own rule about arithmetic"]
    assert "nosuch_function" in by_name["c_dies.sql"].died
    proc = cli(db.url, "--extra", str(extra))
    assert proc.returncode == 1
    assert "my own rule about arithmetic" in proc.stdout and "died" in proc.stdout
    assert db.one("select count(*) from pg_namespace where nspname = 'mine'") == 0


def test_extra_that_is_not_a_folder_of_tests_is_one_line(db, tmp_path):
    for path in (tmp_path / "missing", tmp_path):
        proc = cli(db.url, "--extra", str(path))
        assert proc.returncode == 1
        assert proc.stderr.startswith("error: --extra") and len(proc.stderr.strip().splitlines()) == 1


# -- refusals: one line, no traceback -------------------------------------------------------------
def test_a_login_that_cannot_act_as_the_app_roles_is_told_so_in_one_line(db):
    name = f"verify_{uuid.uuid4().hex[:8]}"
    db.sql(f"create role {name} login password 'Verify-Pass-1'")
    try:
        url = login_url(db.url, name, "Verify-Pass-1")
        with pytest.raises(UserError, match="may not `set role`"):
            verify.run(url)
        proc = cli(url)
        assert proc.returncode == 1
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    finally:
        db.sql(f"drop role {name}")


def test_a_server_without_pgtap_gets_it_from_this_machine_or_one_line(db, monkeypatch):
    monkeypatch.setattr(verify, "pgtap_on_server", lambda conn: False)
    with psycopg.connect(db.url, autocommit=True) as conn:
        script = verify.preflight(conn)
        assert script is not None and script.name.startswith("pgtap--")
        # Loaded into the file's own transaction: the file passes and leaves nothing.
        result = verify.run_file(conn, TESTS_DIR / "03_session.sql", script)
        assert result.passed, result.detail
    assert db.one("select count(*) from pg_namespace where nspname like 'smsao_test%'") == 0
    monkeypatch.setattr(verify, "PGTAP_SCRIPTS", "/nonexistent/pgtap--*.sql")
    with pytest.raises(UserError, match="pgTAP is not installed on the database server"):
        verify.run(db.url)


def test_an_unreachable_database_is_one_line():
    proc = cli("postgresql://postgres@127.0.0.1:1/nope")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot connect") and len(proc.stderr.strip().splitlines()) == 1


# -- pg_prove runs the same files -----------------------------------------------------------------
def pg_prove(url: str) -> subprocess.CompletedProcess:
    assert shutil.which("pg_prove"), "pg_prove is missing: ./dev setup installs libtap-parser-sourcehandler-pgtap-perl"
    return subprocess.run(["pg_prove", "-d", url, *sorted(str(f) for f in TESTS_DIR.glob("*.sql"))],
                          capture_output=True, text=True, timeout=180)


def test_pg_prove_passes_on_both_shapes(any_db):
    proc = pg_prove(any_db.url)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "All tests successful." in proc.stdout
    assert any_db.one("select count(*) from pg_namespace where nspname like 'smsao_test%'") == 0


def test_pg_prove_fails_on_a_sabotaged_database(db):
    db.sql("alter table public.campaigns disable row level security")
    proc = pg_prove(db.url)
    assert proc.returncode != 0
    assert "RLS is enabled on public.campaigns" in proc.stdout + proc.stderr


# -- pg_cron in the app's own database (as `up` sets it) --------------------------------------
def test_scheduled_jobs_are_checked_where_pg_cron_lives_in_the_database(cron_not_created):
    from runner import migrate, schedule

    url = cron_not_created.url("smsao")
    migrate.run("upgrade", url, "head")
    schedule.apply(url)
    results = {r.name: r for r in verify.run(url)}
    assert [(n, r.detail) for n, r in results.items() if not r.passed] == []
    assert not any(a.skipped for a in results["09_scheduling.sql"].assertions)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("update cron.job set schedule = '0 * * * *' where jobname = 'smsao-health-check'")
    assert "every smsao-* job scheduled for this database runs what smsao.cron_jobs() defines, on its schedule" \
        in failing(url)
