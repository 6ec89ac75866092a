create trigger credit_transactions_apply
  after insert on public.credit_transactions
  for each row execute function smsao.apply_credit_transaction();

create trigger profiles_record_credit_adjustment
  after insert or update of credits on public.profiles
  for each row execute function smsao.record_credit_adjustment();
