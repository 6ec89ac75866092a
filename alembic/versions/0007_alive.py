<<<<<<< HEAD
"""Alive over time: the scheduler's failed runs counted, its vitals told apart from downtime (issue 15).

A run that never connected counts as failed, a server that was down is not a scheduler that
stopped, the last hour of refusals is that hour or NULL, and each NULL vital says why.
=======
"""Alive over time (issue 15): the scheduler survives restarts and crashes, failed runs are
seen, backups run themselves, and the review's defects.

On this branch (web): engine vitals are null, with the reason, when the health check's
owner cannot see other sessions; the dashboard's readers of the critical operations'
figures, executable by service_role.
>>>>>>> web

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
