"""Cache invalidation notifications and operator support.

Revision ID: 0004_operator
Revises: 0003_monitoring
Create Date: 2026-11-25
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0004_operator"
down_revision = "0003_monitoring"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0004_operator/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0004_operator/down.sql")
