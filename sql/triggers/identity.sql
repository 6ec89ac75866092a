create or replace trigger smsao_on_auth_user_created
  after insert on auth.users referencing new table as new_users
  for each statement execute function smsao.handle_new_user();

create or replace trigger profiles_touch_updated_at
  before update on public.profiles
  for each row execute function smsao.touch_updated_at();
