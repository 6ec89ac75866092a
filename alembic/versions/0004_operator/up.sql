-- Frozen by scripts/freeze_sql.py for revision 0004_operator. Do not edit.

-- ==== sql/functions/notify_cache_invalidation.sql ====
-- Tells every app process which cached keys a statement made stale (runner.cache listens).
--
-- Statement-level with transition tables: one NOTIFY per statement carrying the distinct
-- keys of the owners it touched, so a 5,000-row import sends one notification, not 5,000.
-- The trigger arguments are key templates in which '{user_id}' stands for each affected
-- owner, e.g. 'contacts:{user_id}' or 'sms_logs:{user_id}:*' (a pattern: every page).
-- The payload is a JSON array of keys and fnmatch patterns. NOTIFY payloads must stay
-- under 8000 bytes: when the keys would not fit, the statement touched so many owners
-- that the whole family goes instead ('contacts:*'), as it does for TRUNCATE.
-- Notifications are sent at commit and never for a rolled-back transaction, so a cache
-- never drops (or refetches) a key for a change that did not happen.
create function smsao.notify_cache_invalidation() returns trigger
  language plpgsql
  set search_path = ''
as $$
declare
  owners uuid[];
  keys text[];
  payload text;
begin
  if tg_op = 'INSERT' then
    select pg_catalog.array_agg(distinct n.user_id) into owners from new_rows n;
  elsif tg_op = 'UPDATE' then
    select pg_catalog.array_agg(distinct u.user_id) into owners
      from (select o.user_id from old_rows o union select n.user_id from new_rows n) u;
  elsif tg_op = 'DELETE' then
    select pg_catalog.array_agg(distinct o.user_id) into owners from old_rows o;
  end if;  -- TRUNCATE: no transition tables, owners stays NULL (everyone)

  if tg_op <> 'TRUNCATE' and owners is null then
    return null;  -- the statement changed no row
  end if;

  if owners is not null then
    select pg_catalog.array_agg(pg_catalog.replace(t.template, '{user_id}', o.owner::text)
                                order by t.ord, o.owner)
      into keys
      from pg_catalog.unnest(tg_argv) with ordinality t (template, ord)
     cross join pg_catalog.unnest(owners) o (owner);
    payload := pg_catalog.to_jsonb(keys)::text;
  end if;

  if payload is null or pg_catalog.octet_length(payload) > 7900 then
    select pg_catalog.array_agg(pg_catalog.replace(t.template, '{user_id}', '*') order by t.ord)
      into keys
      from pg_catalog.unnest(tg_argv) with ordinality t (template, ord);
    payload := pg_catalog.to_jsonb(keys)::text;
  end if;

  perform pg_catalog.pg_notify('cache_invalidation', payload);
  return null;
end
$$;
revoke all on function smsao.notify_cache_invalidation() from public;

-- ==== sql/triggers/cache_invalidation.sql ====
-- Which cached keys (runner.cache key helpers) each table's changes make stale.
-- Transition tables allow one event per trigger, hence one trigger per event; all
-- are statement-level (see smsao.notify_cache_invalidation).

-- profiles carries the balance too, and every dashboard shows it.
create trigger profiles_cache_insert after insert on public.profiles
  referencing new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger profiles_cache_update after update on public.profiles
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger profiles_cache_delete after delete on public.profiles
  referencing old table as old_rows for each statement
  execute function smsao.notify_cache_invalidation('profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger profiles_cache_truncate after truncate on public.profiles
  for each statement
  execute function smsao.notify_cache_invalidation('profile:{user_id}', 'credits:{user_id}', 'dashboard_stats:{user_id}');

create trigger credit_transactions_cache_insert after insert on public.credit_transactions
  referencing new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger credit_transactions_cache_update after update on public.credit_transactions
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger credit_transactions_cache_delete after delete on public.credit_transactions
  referencing old table as old_rows for each statement
  execute function smsao.notify_cache_invalidation('credits:{user_id}', 'dashboard_stats:{user_id}');
create trigger credit_transactions_cache_truncate after truncate on public.credit_transactions
  for each statement
  execute function smsao.notify_cache_invalidation('credits:{user_id}', 'dashboard_stats:{user_id}');

create trigger contacts_cache_insert after insert on public.contacts
  referencing new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('contacts:{user_id}', 'dashboard_stats:{user_id}');
create trigger contacts_cache_update after update on public.contacts
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('contacts:{user_id}', 'dashboard_stats:{user_id}');
create trigger contacts_cache_delete after delete on public.contacts
  referencing old table as old_rows for each statement
  execute function smsao.notify_cache_invalidation('contacts:{user_id}', 'dashboard_stats:{user_id}');
create trigger contacts_cache_truncate after truncate on public.contacts
  for each statement
  execute function smsao.notify_cache_invalidation('contacts:{user_id}', 'dashboard_stats:{user_id}');

create trigger campaigns_cache_insert after insert on public.campaigns
  referencing new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('campaigns:{user_id}', 'dashboard_stats:{user_id}');
create trigger campaigns_cache_update after update on public.campaigns
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('campaigns:{user_id}', 'dashboard_stats:{user_id}');
create trigger campaigns_cache_delete after delete on public.campaigns
  referencing old table as old_rows for each statement
  execute function smsao.notify_cache_invalidation('campaigns:{user_id}', 'dashboard_stats:{user_id}');
create trigger campaigns_cache_truncate after truncate on public.campaigns
  for each statement
  execute function smsao.notify_cache_invalidation('campaigns:{user_id}', 'dashboard_stats:{user_id}');

-- Log pages shift when a row is added, so every cached page of the owner goes.
create trigger sms_logs_cache_insert after insert on public.sms_logs
  referencing new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('sms_logs:{user_id}:*', 'dashboard_stats:{user_id}');
create trigger sms_logs_cache_update after update on public.sms_logs
  referencing old table as old_rows new table as new_rows for each statement
  execute function smsao.notify_cache_invalidation('sms_logs:{user_id}:*', 'dashboard_stats:{user_id}');
create trigger sms_logs_cache_delete after delete on public.sms_logs
  referencing old table as old_rows for each statement
  execute function smsao.notify_cache_invalidation('sms_logs:{user_id}:*', 'dashboard_stats:{user_id}');
create trigger sms_logs_cache_truncate after truncate on public.sms_logs
  for each statement
  execute function smsao.notify_cache_invalidation('sms_logs:{user_id}:*', 'dashboard_stats:{user_id}');
