"""Session validation, exact rate limiting, audit trails and the critical operations.

Revision ID: 0002_security
Revises: 0001_foundation
Create Date: 2026-11-25
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0002_security"
down_revision = "0001_foundation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0002_security/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0002_security/down.sql")
