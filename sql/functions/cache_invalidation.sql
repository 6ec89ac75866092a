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
create or replace function smsao.send_cache_invalidation(owners uuid[], templates text[]) returns void
  language plpgsql
  set search_path = ''
as $$
declare
  payload text;
begin
  if owners is not null and pg_catalog.cardinality(owners) = 0 then
    return;  -- the statement changed no row
  end if;
  -- A key is at least a uuid (36 characters) with its quotes and a separator: past that
  -- many keys the payload cannot fit, so it is not built (at 100k owners it would be
  -- megabytes of text thrown away).
  if owners is not null and pg_catalog.cardinality(owners) * pg_catalog.cardinality(templates) * 39 <= 7900 then
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
revoke all on function smsao.send_cache_invalidation(uuid[], text[]) from public, anon, authenticated, service_role;
-- The triggers run with the writer's rights, and app users and the backend write these
-- tables (anon never can). Calling it directly can only make caches drop keys early.
grant execute on function smsao.send_cache_invalidation(uuid[], text[]) to authenticated, service_role;

create or replace function smsao.cache_invalidation_on_insert() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(
    (select coalesce(pg_catalog.array_agg(distinct n.user_id), '{}') from new_rows n), tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_insert() from public, anon, authenticated, service_role;

-- Both owners: an UPDATE may move a row from one user to another.
create or replace function smsao.cache_invalidation_on_update() returns trigger
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
revoke all on function smsao.cache_invalidation_on_update() from public, anon, authenticated, service_role;

create or replace function smsao.cache_invalidation_on_delete() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(
    (select coalesce(pg_catalog.array_agg(distinct o.user_id), '{}') from old_rows o), tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_delete() from public, anon, authenticated, service_role;

create or replace function smsao.cache_invalidation_on_truncate() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  perform smsao.send_cache_invalidation(null, tg_argv);
  return null;
end
$$;
revoke all on function smsao.cache_invalidation_on_truncate() from public, anon, authenticated, service_role;
