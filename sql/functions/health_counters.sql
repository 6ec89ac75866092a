-- The live counters behind production_system_health_check() (table smsao.health_counters,
-- triggers in sql/triggers/health_counters.sql). Every change to a counted table adjusts
-- the counters in the same transaction, so a health check sees exactly what its snapshot
-- sees, at the cost of a few small-table reads however big the data grows.
--
-- Metrics kept here:
--   total_users              rows of public.profiles
--   pending_credit_requests  credit_requests with status 'pending'
--   orphaned_sms_logs        sms_logs rows whose user_id has no profile
--   orphaned_otp_codes       otp_codes rows with a user_id that has no profile
--   sms, sms_failed          sms_logs rows (all / status 'failed') per hour of created_at (UTC),
--                            kept for the last 48 hours of created_at
--
-- Advisory lock keys used by the monitoring code (two-int form, first key 7411220..7411229):
--   (7411220, 1)       one record_health_snapshot() at a time
--   (7411221, bucket)  owner-id buckets of the orphan counters (smsao.ownerless_rows)

-- Add `delta` to a metric without waiting for any other writer: take any row of the
-- metric that no other transaction holds, or start a new row. Row count per metric stays
-- near the peak number of concurrent writers; smsao.compact_health_counters folds them.
create function smsao.bump_counter(metric_name text, at_bucket timestamptz, delta bigint) returns void
  language plpgsql
  set search_path = ''
as $$
begin
  if delta = 0 then
    return;
  end if;
  update smsao.health_counters c set value = c.value + delta
  where c.id = (select h.id from smsao.health_counters h
                where h.metric = metric_name and h.bucket = at_bucket
                limit 1 for update skip locked);
  if not found then
    insert into smsao.health_counters (metric, bucket, value) values (metric_name, at_bucket, delta);
  end if;
end
$$;
revoke all on function smsao.bump_counter(text, timestamptz, bigint) from public;

-- The hour bucket of a timestamp, the same in every session time zone.
create function smsao.hour_bucket(ts timestamptz) returns timestamptz
  language sql immutable parallel safe
  set search_path = ''
as $$
  select pg_catalog.date_bin('1 hour', ts, '2000-01-01 00:00:00+00'::timestamptz)
$$;
revoke all on function smsao.hour_bucket(timestamptz) from public;
grant execute on function smsao.hour_bucket(timestamptz) to authenticated, service_role;

-- How many of some rows of sms_logs / otp_codes have no owner profile.
-- owner_ids/row_counts: the distinct user_ids of the rows and how many rows each has.
--
-- Rows entering (insert, or the new side of an update) are checked like a foreign key
-- would: the owners found are locked FOR KEY SHARE, so a concurrent profile deletion
-- waits for us and then counts these rows itself. For owners not found, we take the
-- exclusive advisory lock of their id bucket (a transaction creating such a profile
-- holds it shared, see smsao.count_profiles), then look again: either that profile
-- committed (not orphaned) or its creator will count our rows once we commit.
--
-- Rows leaving (delete, old side of an update) are only looked up: a concurrent profile
-- insert or delete locks the rows it counts (FOR KEY SHARE), so it either waited for our
-- deletion or made our deletion wait for its commit; both orders count each row once.
create function smsao.ownerless_rows(owner_ids uuid[], row_counts bigint[], entering boolean) returns bigint
  language plpgsql
  set search_path = ''
as $$
declare
  missing uuid[];
begin
  if coalesce(cardinality(owner_ids), 0) = 0 then
    return 0;
  end if;
  if entering then
    perform from public.profiles p where p.user_id = any (owner_ids) for key share;
  end if;
  missing := array(select u from unnest(owner_ids) u
                   where not exists (select from public.profiles p where p.user_id = u));
  if cardinality(missing) = 0 then
    return 0;
  end if;
  if entering then
    perform pg_catalog.pg_advisory_xact_lock(7411221, s.bucket)
    from (select distinct (pg_catalog.hashtext(u::text) & 1023) as bucket
          from unnest(missing) u order by 1) s;
    perform from public.profiles p where p.user_id = any (missing) for key share;
    missing := array(select u from unnest(missing) u
                     where not exists (select from public.profiles p where p.user_id = u));
  end if;
  return (select coalesce(sum(t.n), 0)::bigint
          from unnest(owner_ids, row_counts) as t(u, n)
          join unnest(missing) as m(u) on m.u = t.u);
end
$$;
revoke all on function smsao.ownerless_rows(uuid[], bigint[], boolean) from public;

-- The trigger functions below run once per statement, one per table and event (a
-- trigger with transition tables serves one event). SECURITY DEFINER: whoever writes
-- the counted table needs no right on smsao.health_counters.

-- profiles: total_users, and the orphan counters when an owner comes or goes.
create function smsao.count_profiles_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  users bigint;
  sms_rows bigint;
  otp_rows bigint;
begin
  select count(*) into users from new_rows;
  -- A user re-created with an old id adopts the rows the old account left. The shared
  -- bucket locks make in-flight writers of such ownerless rows finish first (they hold
  -- the bucket exclusively), and the row locks make in-flight deletions of them finish
  -- first (or wait for us), so the counts below are exact.
  perform pg_catalog.pg_advisory_xact_lock_shared(7411221, s.bucket)
  from (select distinct (pg_catalog.hashtext(n.user_id::text) & 1023) as bucket
        from new_rows n order by 1) s;
  select count(*) into sms_rows from (
    select from public.sms_logs l where l.user_id in (select n.user_id from new_rows n)
    for key share of l) x;
  select count(*) into otp_rows from (
    select from public.otp_codes o where o.user_id in (select n.user_id from new_rows n)
    for key share of o) x;
  perform smsao.bump_counter('total_users', '-infinity', users);
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', -sms_rows);
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', -otp_rows);
  return null;
end
$$;
revoke all on function smsao.count_profiles_insert() from public;

create function smsao.count_profiles_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  users bigint;
  sms_rows bigint;
  otp_rows bigint;
begin
  select count(*) into users from old_rows;
  -- The deleted users' rows become orphans. Locking them makes a concurrent deletion
  -- of one of them either finish first (then it is not counted here) or wait for us.
  -- Cost: proportional to the deleted users' rows; deleting a user is rare.
  select count(*) into sms_rows from (
    select from public.sms_logs l where l.user_id in (select o.user_id from old_rows o)
    for key share of l) x;
  select count(*) into otp_rows from (
    select from public.otp_codes c where c.user_id in (select o.user_id from old_rows o)
    for key share of c) x;
  perform smsao.bump_counter('total_users', '-infinity', -users);
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', sms_rows);
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', otp_rows);
  return null;
end
$$;
revoke all on function smsao.count_profiles_delete() from public;

-- credit_requests: pending_credit_requests.
create function smsao.count_credit_requests_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_insert() from public;

create function smsao.count_credit_requests_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    (select count(*) from new_rows n where n.status = 'pending')
    - (select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_update() from public;

create function smsao.count_credit_requests_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.bump_counter('pending_credit_requests', '-infinity',
    -(select count(*) from old_rows o where o.status = 'pending'));
  return null;
end
$$;
revoke all on function smsao.count_credit_requests_delete() from public;

-- sms_logs: per-hour totals and failures (`sms`, `sms_failed`), and orphaned_sms_logs.
-- Hours older than 48 h are not kept: the health check reads the last 25.
create function smsao.count_sms_logs_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
  r record;
  ids uuid[];
  counts bigint[];
begin
  for r in select smsao.hour_bucket(n.created_at) as bucket, count(*) as total,
                  count(*) filter (where n.status = 'failed') as failed
           from new_rows n where n.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select n.user_id, count(*) as n from new_rows n group by 1) g;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', smsao.ownerless_rows(ids, counts, true));
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_insert() from public;

create function smsao.count_sms_logs_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
  r record;
  ids uuid[];
  counts bigint[];
begin
  for r in select smsao.hour_bucket(o.created_at) as bucket, count(*) as total,
                  count(*) filter (where o.status = 'failed') as failed
           from old_rows o where o.created_at >= oldest group by 1 loop
    perform smsao.bump_counter('sms', r.bucket, -r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, -r.failed);
  end loop;
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select o.user_id, count(*) as n from old_rows o group by 1) g;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', -smsao.ownerless_rows(ids, counts, false));
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_delete() from public;

-- Status updates (delivery reports) are the common case: they move a row in or out of
-- `sms_failed` and leave the rest alone; a changed user_id is a leaving old row plus an
-- entering new one.
create function smsao.count_sms_logs_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
  r record;
  ids uuid[];
  counts bigint[];
  orphans bigint := 0;
begin
  for r in select d.bucket, sum(d.total) as total, sum(d.failed) as failed
           from (select smsao.hour_bucket(n.created_at) as bucket, 1 as total,
                        (n.status = 'failed')::int as failed
                 from new_rows n where n.created_at >= oldest
                 union all
                 select smsao.hour_bucket(o.created_at), -1, -((o.status = 'failed')::int)
                 from old_rows o where o.created_at >= oldest) d
           group by d.bucket loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  if exists (select from old_rows o join new_rows n on n.id = o.id where n.user_id <> o.user_id) then
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select o.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id <> o.user_id group by 1) g;
    orphans := -smsao.ownerless_rows(ids, counts, false);
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id <> o.user_id group by 1) g;
    orphans := orphans + smsao.ownerless_rows(ids, counts, true);
  end if;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', orphans);
  return null;
end
$$;
revoke all on function smsao.count_sms_logs_update() from public;

-- otp_codes: orphaned_otp_codes (OTPs without user_id are for phones, never orphaned).
create function smsao.count_otp_codes_insert() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
begin
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select n.user_id, count(*) as n from new_rows n where n.user_id is not null group by 1) g;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', smsao.ownerless_rows(ids, counts, true));
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_insert() from public;

create function smsao.count_otp_codes_delete() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
begin
  select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
  from (select o.user_id, count(*) as n from old_rows o where o.user_id is not null group by 1) g;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', -smsao.ownerless_rows(ids, counts, false));
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_delete() from public;

create function smsao.count_otp_codes_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
  orphans bigint := 0;
begin
  if exists (select from old_rows o join new_rows n on n.id = o.id
             where n.user_id is distinct from o.user_id) then
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select o.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id is distinct from o.user_id and o.user_id is not null group by 1) g;
    orphans := -smsao.ownerless_rows(ids, counts, false);
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id is distinct from o.user_id and n.user_id is not null group by 1) g;
    orphans := orphans + smsao.ownerless_rows(ids, counts, true);
  end if;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', orphans);
  return null;
end
$$;
revoke all on function smsao.count_otp_codes_update() from public;

-- Recompute every counter from the tables. Run by the migration that introduces the
-- counters, after a TRUNCATE or a change of profiles.user_id (both rare), and by a DBA
-- after loading data with triggers disabled (session_replication_role = replica).
-- Cost: one pass over each counted table. Writers of those tables wait meanwhile
-- (SHARE lock), which is what makes the result exact.
create function smsao.recount_health_counters() returns jsonb
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
begin
  lock table public.profiles, public.credit_requests, public.sms_logs, public.otp_codes in share mode;
  delete from smsao.health_counters;
  insert into smsao.health_counters (metric, value)
  select 'total_users', count(*) from public.profiles
  union all
  select 'pending_credit_requests', count(*) from public.credit_requests where status = 'pending'
  union all
  select 'orphaned_sms_logs', count(*) from public.sms_logs l
  where not exists (select from public.profiles p where p.user_id = l.user_id)
  union all
  select 'orphaned_otp_codes', count(*) from public.otp_codes o
  where o.user_id is not null and not exists (select from public.profiles p where p.user_id = o.user_id);
  insert into smsao.health_counters (metric, bucket, value)
  select m.metric, b.bucket, m.value
  from (select smsao.hour_bucket(l.created_at) as bucket, count(*) as total,
               count(*) filter (where l.status = 'failed') as failed
        from public.sms_logs l where l.created_at >= oldest group by 1) b
  cross join lateral (values ('sms', b.total), ('sms_failed', b.failed)) as m(metric, value)
  where m.value <> 0;
  return (select pg_catalog.jsonb_object_agg(t.metric, t.total)
          from (select c.metric, sum(c.value) as total from smsao.health_counters c
                where c.bucket = '-infinity' group by c.metric) t);
end
$$;
revoke all on function smsao.recount_health_counters() from public;

create function smsao.recount_health_counters_trigger() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  perform smsao.recount_health_counters();
  return null;
end
$$;
revoke all on function smsao.recount_health_counters_trigger() from public;

-- Fold each metric's rows into one and drop hours no reader needs, skipping rows that a
-- writer holds right now (they are folded next time). Returns the rows removed.
-- Run by record_health_snapshot() and the daily housekeeping; correctness never depends
-- on it, only the size of smsao.health_counters does.
create function smsao.compact_health_counters() returns integer
  language plpgsql security definer
  set search_path = ''
as $$
declare
  oldest timestamptz := smsao.hour_bucket(pg_catalog.now() - interval '48 hours');
  removed integer;
  folded integer := 0;
  r record;
begin
  delete from smsao.health_counters c
  where c.id in (select h.id from smsao.health_counters h
                 where h.bucket > '-infinity' and h.bucket < oldest
                 for update skip locked);
  get diagnostics removed = row_count;
  for r in select l.metric, l.bucket, pg_catalog.array_agg(l.id order by l.id) as ids, sum(l.value) as total
           from (select h.id, h.metric, h.bucket, h.value from smsao.health_counters h
                 for update skip locked) l
           group by l.metric, l.bucket having count(*) > 1 loop
    update smsao.health_counters c set value = r.total where c.id = r.ids[1];
    delete from smsao.health_counters c where c.id = any (r.ids[2:]);
    folded := folded + cardinality(r.ids) - 1;
  end loop;
  return removed + folded;
end
$$;
revoke all on function smsao.compact_health_counters() from public;
