"""The rate limiter at a large limit in one row write (issue 19): a key of a limit above 100
keeps its newest attempts, up to 100, in the array on its key row, and one admission in 100
moves them to smsao.rate_limit_hits in one statement, instead of every admission writing
its own row there (docs/scaling.md, section 2d). Existing large keys start with an empty
array: their attempts stay where they are.

Revision ID: 0014_large_rings
Revises: 0013_scale_speed
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0014_large_rings"
down_revision = "0013_scale_speed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0014_large_rings/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0014_large_rings/down.sql")
    apply_frozen_sql(op, "0014_large_rings/restore.sql")
