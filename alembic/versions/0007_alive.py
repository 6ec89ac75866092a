"""Alive over time (issue 15): backups and drills recorded and watched, scheduled backups.

Backups and restore drills are recorded and watched as vital signs (wal_archive_failing,
backup_age_s, restore_drill_age_s); the embedded database schedules its own backup and drill.

Revision ID: 0007_alive
Revises: 0006_vitals
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0007_alive"
down_revision = "0006_vitals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0007_alive/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0007_alive/down.sql")
    apply_frozen_sql(op, "0007_alive/restore.sql")
