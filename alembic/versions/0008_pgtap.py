"""The mark of a verify run: the package's pgTAP tests change no production figure (issue 16).

smsao.verify_runs, owner only; the critical operations' counters skip the calls made inside
the transaction that marked itself there.

Revision ID: 0008_pgtap
Revises: 0007_alive
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0008_pgtap"
down_revision = "0007_alive"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0008_pgtap/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0008_pgtap/down.sql")
    apply_frozen_sql(op, "0008_pgtap/restore.sql")
