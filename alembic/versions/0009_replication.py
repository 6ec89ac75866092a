"""Replication vital signs in the health check (issue 17): streaming standbys, replay lag.

Revision ID: 0009_replication
Revises: 0008_pgtap
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0009_replication"
down_revision = "0008_pgtap"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0009_replication/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0009_replication/down.sql")
    apply_frozen_sql(op, "0009_replication/restore.sql")
