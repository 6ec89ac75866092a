"""Business analytics: prices, spend, custom events, milestones, revenue rollups, GA4 outbox (issue 18).

CONTRACT section 7: credit_prices, acquisition_spend, business_events, track_event,
business_metrics, conversion_funnel, retention_cohorts, maintained by statement-level
triggers on the product's tables.

Revision ID: 0010_analytics
Revises: 0009_replication
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0010_analytics"
down_revision = "0009_replication"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0010_analytics/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0010_analytics/down.sql")
