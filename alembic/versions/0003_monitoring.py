"""Health check, retention cleanup, monitoring snapshots and alerts.

Revision ID: 0003_monitoring
Revises: 0002_security
Create Date: 2026-11-25
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0003_monitoring"
down_revision = "0002_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0003_monitoring/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0003_monitoring/down.sql")
