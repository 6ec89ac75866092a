create or replace trigger smsao_on_auth_user_created
  after insert on auth.users referencing new table as new_users
  for each statement execute function smsao.handle_new_user();

-- Only when the statement leaves updated_at alone: the ledger's balance UPDATE stamps it
-- itself, and a WHEN clause costs no function call per row (app roles cannot write the
-- column: sql/policies/profiles.sql).
create or replace trigger profiles_touch_updated_at
  before update on public.profiles
  for each row when (new.updated_at is not distinct from old.updated_at)
  execute function smsao.touch_updated_at();
