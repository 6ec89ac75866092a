-- Which cached keys (runner.cache key helpers) each table's changes make stale.
-- Transition tables allow one event per trigger, hence one trigger per event; all
-- are statement-level (see sql/functions/notify_cache_invalidation.sql).

-- profiles carries the balance too, and every dashboard shows it.
create trigger profiles_cache_insert after insert on public.profiles
  referencing new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_insert('profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger profiles_cache_update after update on public.profiles
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_update('profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger profiles_cache_delete after delete on public.profiles
  referencing old table as old_rows for each statement
  execute function smsao.cache_invalidation_on_delete('profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger profiles_cache_truncate after truncate on public.profiles
  for each statement
  execute function smsao.cache_invalidation_on_truncate('profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}');

create trigger credit_transactions_cache_insert after insert on public.credit_transactions
  referencing new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_insert('credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger credit_transactions_cache_update after update on public.credit_transactions
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_update('credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger credit_transactions_cache_delete after delete on public.credit_transactions
  referencing old table as old_rows for each statement
  execute function smsao.cache_invalidation_on_delete('credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger credit_transactions_cache_truncate after truncate on public.credit_transactions
  for each statement
  execute function smsao.cache_invalidation_on_truncate('credits:{user_id}', 'dashboard_stats:{user_id}');

create trigger contacts_cache_insert after insert on public.contacts
  referencing new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_insert('contacts:{user_id}', 'dashboard_stats:{user_id}');
create trigger contacts_cache_update after update on public.contacts
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_update('contacts:{user_id}', 'dashboard_stats:{user_id}');
create trigger contacts_cache_delete after delete on public.contacts
  referencing old table as old_rows for each statement
  execute function smsao.cache_invalidation_on_delete('contacts:{user_id}', 'dashboard_stats:{user_id}');
create trigger contacts_cache_truncate after truncate on public.contacts
  for each statement
  execute function smsao.cache_invalidation_on_truncate('contacts:{user_id}', 'dashboard_stats:{user_id}');

create trigger campaigns_cache_insert after insert on public.campaigns
  referencing new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_insert('campaigns:{user_id}', 'dashboard_stats:{user_id}');
create trigger campaigns_cache_update after update on public.campaigns
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_update('campaigns:{user_id}', 'dashboard_stats:{user_id}');
create trigger campaigns_cache_delete after delete on public.campaigns
  referencing old table as old_rows for each statement
  execute function smsao.cache_invalidation_on_delete('campaigns:{user_id}', 'dashboard_stats:{user_id}');
create trigger campaigns_cache_truncate after truncate on public.campaigns
  for each statement
  execute function smsao.cache_invalidation_on_truncate('campaigns:{user_id}', 'dashboard_stats:{user_id}');

-- Log pages shift when a row is added, so every cached page of the owner goes.
create trigger sms_logs_cache_insert after insert on public.sms_logs
  referencing new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_insert('sms_logs:{user_id}:*', 'dashboard_stats:{user_id}');
create trigger sms_logs_cache_update after update on public.sms_logs
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.cache_invalidation_on_update('sms_logs:{user_id}:*', 'dashboard_stats:{user_id}');
create trigger sms_logs_cache_delete after delete on public.sms_logs
  referencing old table as old_rows for each statement
  execute function smsao.cache_invalidation_on_delete('sms_logs:{user_id}:*', 'dashboard_stats:{user_id}');
create trigger sms_logs_cache_truncate after truncate on public.sms_logs
  for each statement
  execute function smsao.cache_invalidation_on_truncate('sms_logs:{user_id}:*', 'dashboard_stats:{user_id}');
