"""Security and correctness hardening (issue 8) and linear bulk writes (issue 10).

Exact grants on Supabase, no self-approval, one attempt per statement (upserts too),
admissions stamped when admitted, refusals and errors counted through rollback, bounded
rate-limit state and denial audit, service_role unthrottled, non-active users write
nothing, admins reach PII only through audited paths; the rate limiter in O(1) per call;
statement-level signup and ledger triggers.

Revision ID: 0005_hardening
Revises: 0004_operator
Create Date: 2026-11-30
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0005_hardening"
down_revision = "0004_operator"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0005_hardening/pre.sql")
    apply_frozen_sql(op, "0005_hardening/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0005_hardening/down.sql")
    apply_frozen_sql(op, "0005_hardening/restore.sql")
