"""Analytics at speed (issue 18): the funnel in under a second at 1M users, SMS inserts within budget.

The funnel becomes one query built per call, each step a hash join with the window of an index
(profiles by created_at, new; custom events' first occurrences per user, smsao.event_firsts,
new, kept by the business_events triggers and exact, with a fallback to the events themselves
when a first occurrence is before the previous step or only a lower bound). sent_sms loses its
trigger: the sms_logs insert counter, which groups the statement's rows by user anyway, hands
them to smsao.record_first_sms, which asks one pass over the sent_sms rows for a statement of
many users instead of probing each. Adds sql/schema/71_analytics_speed.sql and
sql/triggers/analytics_speed.sql; re-freezes sql/functions/analytics_api.sql,
analytics_triggers.sql, health_counters.sql and sql/policies/analytics_internal.sql.

Revision ID: 0012_analytics_speed
Revises: 0011_scale
Create Date: 2026-12-05
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0012_analytics_speed"
down_revision = "0011_scale"
branch_labels = None
depends_on = None


def upgrade() -> None:
    apply_frozen_sql(op, "0012_analytics_speed/up.sql")


def downgrade() -> None:
    apply_frozen_sql(op, "0012_analytics_speed/down.sql")
    apply_frozen_sql(op, "0012_analytics_speed/restore.sql")
    # The sent_sms trigger needs its function, which restore.sql puts back.
    apply_frozen_sql(op, "0012_analytics_speed/down_after_restore.sql")
