"""Speed at scale, continued (issue 19): the audit trails' primary key becomes
(created_at, id) and their separate created_at index goes: one index write fewer per audit
row, which brings a single-row INSERT into the partitioned tables level with the
unpartitioned one (docs/scaling.md, section 2c). The keys are rebuilt under the tables'
locks: the upgrade holds audit writes (every critical RPC) for that time.

The rate limiter's admission is one plain statement: the caller's key computed inline, the
ring on the key row updated without re-reading the key, and a large ring's row inserted
until the ring has wrapped (an update after), instead of an upsert (section 2c).

Revision ID: 0013_scale_speed
Revises: 0012_analytics_speed
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0013_scale_speed"
down_revision = "0012_analytics_speed"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0013_scale_speed/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0013_scale_speed/down.sql")
    apply_frozen_sql(op, "0013_scale_speed/restore.sql")
