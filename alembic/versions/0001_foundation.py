"""Foundation: roles, the auth shim, every table with RLS, identity and ledger triggers.

Revision ID: 0001_foundation
Revises:
Create Date: 2026-11-25
"""
from alembic import op

from runner.migrate import apply_frozen_sql

revision = "0001_foundation"
down_revision = None
branch_labels = None
depends_on = None

BACKFILL_PROFILES = """
-- Users who existed before this migration get their profile and role now, named as
-- smsao.handle_new_user() names new ones (to_jsonb: the column may not exist).
insert into public.profiles (user_id, email, full_name)
select u.id, u.email, nullif(pg_catalog.to_jsonb(u) #>> '{raw_user_meta_data,full_name}', '')
from auth.users u
on conflict (user_id) do nothing;
insert into public.user_roles (user_id, role)
select u.id, 'user' from auth.users u
on conflict (user_id, role) do nothing;
"""


def upgrade() -> None:
    apply_frozen_sql(op, "0001_foundation/up.sql")
    op.execute(BACKFILL_PROFILES)


def downgrade() -> None:
    apply_frozen_sql(op, "0001_foundation/down.sql")
