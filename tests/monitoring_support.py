"""Helpers for the health, cleanup and monitoring tests."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from support import login_url

# The health check's metrics as plain count(*) queries over the same rows (what the
# counters must always equal). Run in the same transaction as the check: same now().
PLAIN_COUNTS = """
select
  (select count(*) from public.profiles) as total_users,
  (select count(*) from public.sms_configurations where is_active) as active_sms_configs,
  (select count(*) from public.credit_requests where status = 'pending') as pending_credit_requests,
  (select count(*) from public.sms_logs where status = 'failed'
     and created_at > now() - interval '24 hours') as failed_sms_24h,
  (select count(*) from public.sms_logs l
     where not exists (select from public.profiles p where p.user_id = l.user_id))
  + (select count(*) from public.otp_codes o
     where o.user_id is not null and not exists (select from public.profiles p where p.user_id = o.user_id))
    as orphaned_data
"""
METRIC_NAMES = ("total_users", "active_sms_configs", "pending_credit_requests", "failed_sms_24h", "orphaned_data")


def health_and_counts(db) -> tuple[dict, dict]:
    """The health report and the plain counts, from one snapshot."""
    with db.conn.transaction():
        db.conn.execute("set local transaction isolation level repeatable read")
        report = db.one("select public.production_system_health_check()")
        row = db.sql(PLAIN_COUNTS)[0]
    return report, dict(zip(METRIC_NAMES, row))


def metrics(db) -> dict:
    return db.one("select public.production_system_health_check()")["metrics"]


def add_sms(db, user_id, status="sent", age="1 minute", n=1) -> None:
    db.sql("insert into public.sms_logs (user_id, recipient, status, created_at) "
           "select %s, '+244900000000', %s, now() - %s::interval from generate_series(1, %s)",
           [user_id, status, age, n])


def add_otp(db, user_id=None, expires_in="10 minutes", n=1) -> None:
    db.sql("insert into public.otp_codes (user_id, phone, code_hash, expires_at) "
           "select %s, '+244900000001', md5(random()::text), now() + %s::interval from generate_series(1, %s)",
           [user_id, expires_in, n])


def add_config(db, active=True) -> None:
    db.sql("insert into public.sms_configurations (gateway_name, sender_id, is_active) values ('gw', 'SMSAO', %s)",
           [active])


def add_credit_request(db, user_id, status="pending", n=1) -> None:
    processed = "null" if status == "pending" else "now()"
    db.sql(f"insert into public.credit_requests (user_id, amount, status, processed_at) "
           f"select %s, 100, %s, {processed} from generate_series(1, %s)", [user_id, status, n])


def delete_user(db, user_id) -> None:
    db.sql("delete from auth.users where id = %s", [user_id])


def set_threshold(db, metric, warning_at=None, critical_at=None, min_sample=0) -> None:
    db.sql("update smsao.health_thresholds set warning_at = %s, critical_at = %s, min_sample = %s "
           "where metric = %s", [warning_at, critical_at, min_sample, metric])


def ghost() -> uuid.UUID:
    """A user id with no account."""
    return uuid.uuid4()


# The dead man's switch counts from the newest snapshot, or from the server's start if later
# (downtime is not the scheduler failing). The test cluster started minutes ago: play one
# that started a day ago, in this database only.
STARTED_LONG_AGO = """create or replace function smsao.server_started_at() returns timestamptz
  language sql stable set search_path = '' as $$ select pg_catalog.now() - interval '1 day' $$"""
@contextmanager
def service_role_login(db) -> Iterator[str]:
    """A real login granted only service_role (and pg_monitor), as a DBA would create one for
    the dashboard, `monitor` and `health` (CONTRACT section 3); its URL. Dropped afterwards."""
    name = f"smsao_test_svc_{uuid.uuid4().hex[:8]}"
    password = f"Svc-{uuid.uuid4().hex}"
    db.sql(sql.SQL("create role {} login password {} in role service_role, pg_monitor")
           .format(sql.Identifier(name), sql.Literal(password)))
    try:
        yield login_url(db.url, name, password)
    finally:
        db.sql("select pg_terminate_backend(pid) from pg_stat_activity where usename = %s", [name])
        db.sql(sql.SQL("drop role {}").format(sql.Identifier(name)))


def wait_for_run(url: str, jobname: str, status: str, after_runid: int, timeout: float = 100) -> tuple:
    """The first run of a job (by pg_cron's database `url`) in `status` after `after_runid`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            run = conn.execute("select d.runid, d.start_time, d.return_message from cron.job_run_details d "
                               "join cron.job j using (jobid) where j.jobname = %s and d.status = %s "
                               "and d.runid > %s order by d.runid limit 1", [jobname, status, after_runid]).fetchone()
            if run:
                return run
            time.sleep(1)
    raise AssertionError(f"no {status} run of {jobname} within {timeout:.0f} s")
