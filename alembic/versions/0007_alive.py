"""Alive over time (issue 15): the scheduler's runs seen, backups and drills recorded and watched.

Failed runs that never connected are counted, downtime is not a stopped scheduler, the last
hour of refusals is that hour or NULL, each NULL vital says why (the engine's without
pg_read_all_stats too), the dashboard reads the critical operations' figures through readers
that service_role may execute; backups and restore drills are recorded and watched as vital
signs (wal_archive_failing, backup_age_s, restore_drill_age_s), and the embedded database
schedules its own backup and drill.

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
