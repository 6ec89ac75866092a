create or replace trigger profiles_guard_update
  before update on public.profiles
  for each statement execute function smsao.guard_app_write('profile_update');

create or replace trigger contacts_guard_write
  before insert or update or delete on public.contacts
  for each statement execute function smsao.guard_app_write('contact_operation');

create or replace trigger contacts_clear_upsert_mark
  after insert on public.contacts
  for each statement execute function smsao.clear_upsert_mark();
