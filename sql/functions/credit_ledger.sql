-- profiles.credits is the running sum of credit_transactions, whoever writes first:
--  * a ledger row moves the balance (apply_credit_transaction);
--  * a trusted writer (service_role, DBA, loader) that sets profiles.credits directly
--    gets the difference recorded as an 'adjustment' ledger row (record_credit_adjustment).
-- A transaction-local marker tells each trigger that the other one is the writer, so
-- the amount is applied once. It counts only inside a nested trigger (depth > 1): any
-- session may set a custom setting, and a marker set by hand before a plain statement
-- would otherwise skip a balance change or its ledger row.
-- App users hold no privilege on credits or the ledger.

create function smsao.apply_credit_transaction() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'profile' then
    return null;  -- the profile row already carries this amount
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'ledger', true);
  update public.profiles set credits = credits + new.amount where user_id = new.user_id;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.apply_credit_transaction() from public;

create function smsao.record_credit_adjustment() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  delta integer := new.credits - case when tg_op = 'UPDATE' then old.credits else 0 end;
begin
  if delta = 0 or (pg_catalog.pg_trigger_depth() > 1
                   and pg_catalog.current_setting('smsao.credit_writer', true) = 'ledger') then
    return null;
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'profile', true);
  insert into public.credit_transactions (user_id, amount, kind)
  values (new.user_id, delta, 'adjustment');
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.record_credit_adjustment() from public;
