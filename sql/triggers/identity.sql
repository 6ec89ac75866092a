create trigger smsao_on_auth_user_created
  after insert on auth.users
  for each row execute function smsao.handle_new_user();

create trigger profiles_touch_updated_at
  before update on public.profiles
  for each row execute function smsao.touch_updated_at();
