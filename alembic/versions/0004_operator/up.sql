-- Frozen by scripts/freeze_sql.py for revision 0004_operator. Do not edit.

-- ==== sql/functions/cache_invalidation.sql ====
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
--
-- One small trigger function per event, because each sees only its own transition
-- tables (an INSERT trigger has no old rows); they share smsao.send_cache_invalidation.

-- owners NULL means "everyone" (TRUNCATE); an empty array sends nothing.
create function smsao.send_cache_invalidation(owners uuid[], templates text[]) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  payload text;
begin
  if owners is not null and pg_catalog.cardinality(owners) = 0 then
    return;  -- the statement changed no row
  end if;
  if owners is not null then
    select pg_catalog.to_jsonb(pg_catalog.array_agg(pg_catalog.replace(t.template, '{user_id}', o.owner::text)
                                                     order by t.ord, o.owner))::text
      into payload
      from pg_catalog.unnest(templates) with ordinality t (template, ord)
     cross join pg_catalog.unnest(owners) o (owner);
  end if;
  if payload is null or pg_catalog.octet_length(payload) > 7900 then
    select pg_catalog.to_jsonb(pg_catalog.array_agg(pg_catalog.replace(t.template, '{user_id}', '*')
                                                     order by t.ord))::text
      into payload
      from pg_catalog.unnest(templates) with ordinality t (template, ord);
  end if;
  perform pg_catalog.pg_notify('cache_invalidation', payload);
end
$$;
revoke all on function smsao.send_cache_invalidation(uuid[], text[]) from public;
-- The triggers run with the writer's rights, and app users and the backend write these
-- tables (anon never can). Calling it directly can only make caches drop keys early.
grant execute on function smsao.send_cache_invalidation(uuid[], text[]) to authenticated, service_role;

create function smsao.cache_invalidation_on_insert() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(
    (select coalesce(pg_catalog.array_agg(distinct n.user_id), '{}') from new_rows n), tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_insert() from public;

-- Both owners: an UPDATE may move a row from one user to another.
create function smsao.cache_invalidation_on_update() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(
    (select coalesce(pg_catalog.array_agg(distinct u.user_id), '{}')
       from (select o.user_id from old_rows o union select n.user_id from new_rows n) u), tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_update() from public;

create function smsao.cache_invalidation_on_delete() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(
    (select coalesce(pg_catalog.array_agg(distinct o.user_id), '{}') from old_rows o), tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_delete() from public;

create function smsao.cache_invalidation_on_truncate() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(null, tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_truncate() from public;

-- ==== sql/triggers/cache_invalidation.sql ====
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
