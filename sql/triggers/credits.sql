create or replace trigger credit_transactions_apply
  after insert on public.credit_transactions referencing new table as new_entries
  for each statement execute function smsao.apply_credit_transaction();

create or replace trigger profiles_record_credit_adjustment
  after update on public.profiles referencing old table as old_profiles new table as new_profiles
  for each statement execute function smsao.record_credit_adjustment();

create or replace trigger profiles_record_initial_credits
  after insert on public.profiles referencing new table as new_profiles
  for each statement execute function smsao.record_initial_credits();
