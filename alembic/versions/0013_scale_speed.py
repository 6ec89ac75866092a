"""Speed at scale, continued (issue 19): an admission at a large limit is one row write.

Rings of more than 100 attempts move into chunks of 100 (smsao.rate_limit_hits, one row per
chunk): an admission updates the head chunk alone, and the key row only when it enters the
next chunk. The audit trails' primary key becomes (created_at, id) and their separate
created_at index goes: one index write fewer per audit row. Re-freezes
sql/functions/rate_limit.sql and sql/policies/hardening_state.sql.

Revision ID: 0013_scale_speed
Revises: 0011_scale
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0013_scale_speed"
down_revision = "0011_scale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0013_scale_speed/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0013_scale_speed/down.sql")
    apply_frozen_sql(op, "0013_scale_speed/restore.sql")
