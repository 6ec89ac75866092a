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
