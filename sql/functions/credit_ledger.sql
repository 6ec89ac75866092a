-- profiles.credits is the running sum of credit_transactions, whoever writes first:
--  * ledger rows move the balances (apply_credit_transaction);
--  * a trusted writer (service_role, DBA, loader) that sets profiles.credits directly
--    gets the difference recorded as an 'adjustment' ledger row (record_credit_adjustment).
-- Both are statement-level with transition tables: a statement of 100,000 ledger rows is
-- one UPDATE of the balances it moves, not 100,000 (each of which would run the profiles'
-- statement triggers again).
-- A transaction-local marker tells each trigger that the other one is the writer, so
-- the amount is applied once. It counts only inside a nested trigger (depth > 1): any
-- session may set a custom setting, and a marker set by hand before a plain statement
-- would otherwise skip a balance change or its ledger row.
-- App users hold no privilege on credits or the ledger.

-- The balances move in one UPDATE that takes their rows in user order, so two multi-user
-- statements never deadlock: for this function hash and merge joins, sequential and bitmap
-- scans are off, so profiles is reached only through its primary key (its only index),
-- either probed by the deltas in their sorted order or scanned in key order; never in the
-- table's physical order. (Any new index on profiles must keep this true.) No separate pass
-- locks them first (that pass wrote every tuple header twice). The UPDATE stamps updated_at itself, so the row-level
-- touch_updated_at trigger (which fires only when a statement leaves updated_at alone)
-- is not called once per balance.
create or replace function smsao.apply_credit_transaction() returns trigger
  language plpgsql security definer
  set search_path = ''
  set enable_hashjoin = off
  set enable_mergejoin = off
  set enable_seqscan = off
  set enable_bitmapscan = off
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'profile' then
    return null;  -- the profile rows already carry these amounts
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'ledger', true);
  update public.profiles p set credits = p.credits + d.delta, updated_at = pg_catalog.now()
  from (select n.user_id, sum(n.amount) as delta from new_entries n group by n.user_id
        having sum(n.amount) <> 0 order by n.user_id) d
  where p.user_id = d.user_id;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.apply_credit_transaction() from public, anon, authenticated, service_role;

-- Balances set directly: one ledger row per changed balance. One function per event, as
-- each sees only its own transition tables.
create or replace function smsao.record_credit_adjustment() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'ledger' then
    return null;
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'profile', true);
  insert into public.credit_transactions (user_id, amount, kind)
  select n.user_id, n.credits - o.credits, 'adjustment'
  from old_profiles o join new_profiles n on n.user_id = o.user_id
  where n.credits <> o.credits;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.record_credit_adjustment() from public, anon, authenticated, service_role;

create or replace function smsao.record_initial_credits() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  if pg_catalog.pg_trigger_depth() > 1
     and pg_catalog.current_setting('smsao.credit_writer', true) = 'ledger' then
    return null;
  end if;
  perform pg_catalog.set_config('smsao.credit_writer', 'profile', true);
  insert into public.credit_transactions (user_id, amount, kind)
  select n.user_id, n.credits, 'adjustment' from new_profiles n where n.credits <> 0;
  perform pg_catalog.set_config('smsao.credit_writer', '', true);
  return null;
end
$$;
revoke all on function smsao.record_initial_credits() from public, anon, authenticated, service_role;
