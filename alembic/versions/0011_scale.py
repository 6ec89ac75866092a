"""Speed at scale (issue 19): the limiter at one write, the ledger without its lock pass, audit trails in monthly partitions.

The rate limiter keeps rings of up to 100 attempts on the key row (one conditional UPDATE per
admission, no advisory lock); the ledger trigger's balance UPDATE takes profiles in key order by
itself; admin_audit_logs, pii_access_audit and function_call_audit become monthly range
partitions on created_at (pg_partman 4.7 where installed), converted in place with their rows,
each partition secured by an event trigger, drops guarded, and retention drops whole months.
Re-freezes the released sql/functions/rate_limit.sql, credit_ledger.sql, data_cleanup.sql,
housekeeping.sql, cron_jobs.sql, sql/triggers/identity.sql, audit.sql and
sql/policies/{admin_audit_logs,pii_access_audit,function_call_audit}.sql.

Revision ID: 0011_scale
Revises: 0010_analytics
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0011_scale"
down_revision = "0010_analytics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0011_scale/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0011_scale/down.sql")
    apply_frozen_sql(op, "0011_scale/restore.sql")
