"""Vital signs of the engine and the scheduler in the health check (issue 11).

Thresholds in smsao.health_thresholds, and the critical operations' calls, errors and
refusals over time, counted through rollback.

Revision ID: 0006_vitals
Revises: 0005_hardening
Create Date: 2026-11-30
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0006_vitals"
down_revision = "0005_hardening"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0006_vitals/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0006_vitals/down.sql")
    apply_frozen_sql(op, "0006_vitals/restore.sql")
