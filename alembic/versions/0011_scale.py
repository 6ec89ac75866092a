"""Speed at scale (issue 19): the rate limiter at one row write per admission.

Revision ID: 0011_scale
Revises: 0006_vitals
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0011_scale"
down_revision = "0006_vitals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0011_scale/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0011_scale/down.sql")
    apply_frozen_sql(op, "0011_scale/restore.sql")
