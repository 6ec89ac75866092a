-- PROPOSED changes found by bench/bulk_bench.py and bench/rate_limit_bench.py (issue 10).
-- Not part of any migration: sql/ and the frozen revisions belong to the lead. Applied only
-- by `--with-sql bench/proposed/issue10_fixes.sql`, so that a bench measures them against the
-- same floors. Each replaces one function of sql/functions/ with the change described above it.
--
-- 1. count_sms_logs_update / count_otp_codes_update (health_counters.sql): the owner-change
--    test was `if exists (old_rows join new_rows on id ...)`; EXISTS plans for the first row,
--    a nested loop over the two transition tables, O(n^2) when no owner changed (the usual
--    status update). A count plans for all rows (hash join).
-- 2. send_cache_invalidation (cache_invalidation.sql): do not build a payload of every
--    owner's key that cannot fit in a NOTIFY (each key is at least 39 bytes).
-- 3. enhanced_security_rate_limit (rate_limit.sql): every lookup by the full primary key
--    with the attempt number in a variable, and no sequential scans, so that a cached
--    generic plan made when the tables were small (fresh database, after a crash empties
--    the UNLOGGED tables, after pruning) cannot scan all of a key's hits on every call.

create or replace function smsao.count_sms_logs_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  -- smsao.hour_bucket(), inlined: this runs for every SMS written.
  bucket_origin constant timestamptz := '2000-01-01 00:00:00+00'::timestamptz;
  oldest timestamptz := pg_catalog.date_bin('1 hour', pg_catalog.now() - interval '48 hours', bucket_origin);
  r record;
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  for r in select d.bucket, sum(d.total) as total, sum(d.failed) as failed
           from (select pg_catalog.date_bin('1 hour', n.created_at, bucket_origin) as bucket, 1 as total,
                        (n.status = 'failed')::int as failed
                 from new_rows n where n.created_at >= oldest
                 union all
                 select pg_catalog.date_bin('1 hour', o.created_at, bucket_origin), -1, -((o.status = 'failed')::int)
                 from old_rows o where o.created_at >= oldest) d
           group by d.bucket loop
    perform smsao.bump_counter('sms', r.bucket, r.total);
    perform smsao.bump_counter('sms_failed', r.bucket, r.failed);
  end loop;
  if (select count(*) from old_rows o join new_rows n on n.id = o.id where n.user_id <> o.user_id) > 0 then
    select -count(*) into orphans
    from old_rows o join new_rows n on n.id = o.id join smsao.missing_owners m on m.user_id = o.user_id
    where n.user_id <> o.user_id;
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id <> o.user_id group by 1) g;
    orphans := orphans + smsao.entering_orphans(ids, counts);
  end if;
  perform smsao.bump_counter('orphaned_sms_logs', '-infinity', orphans);
  return null;
end
$$;
create or replace function smsao.count_otp_codes_update() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
declare
  ids uuid[];
  counts bigint[];
  orphans bigint := 0::bigint;
begin
  if (select count(*) from old_rows o join new_rows n on n.id = o.id
      where n.user_id is distinct from o.user_id) > 0 then
    select -count(*) into orphans
    from old_rows o join new_rows n on n.id = o.id join smsao.missing_owners m on m.user_id = o.user_id
    where n.user_id is distinct from o.user_id;
    select pg_catalog.array_agg(g.user_id), pg_catalog.array_agg(g.n) into ids, counts
    from (select n.user_id, count(*) as n from old_rows o join new_rows n on n.id = o.id
          where n.user_id is distinct from o.user_id and n.user_id is not null group by 1) g;
    orphans := orphans + smsao.entering_orphans(ids, counts);
  end if;
  perform smsao.bump_counter('orphaned_otp_codes', '-infinity', orphans);
  return null;
end
$$;
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
  -- Each key is at least 36 bytes (a uuid) plus quotes and a comma: past this many keys the
  -- payload cannot fit, so do not build it.
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

create or replace function public.enhanced_security_rate_limit(
  operation_type text,
  max_attempts integer default 5,
  window_minutes integer default 15
) returns boolean
  language plpgsql security definer
  set search_path = ''
  set enable_seqscan = off
as $$
declare
  win      interval;
  -- PL/pgSQL gives text variables and arguments the caller's collation; the statement guard
  -- calls in with "C" (from tg_table_name, of type name), and a "C" comparison cannot use the
  -- primary key (default collation): every lookup below would scan the whole table.
  key      text collate "default";
  op       text collate "default" := operation_type;
  full_at  timestamptz;
  denied_at timestamptz;
  recorded bigint;
  n        bigint;
begin
  if operation_type is null or operation_type !~ '^[a-z][a-z0-9_]{0,62}$' then
    raise exception 'operation_type must be a lowercase identifier such as ''admin_access'', got %',
      coalesce(pg_catalog.quote_literal(operation_type), 'NULL') using errcode = '22023';
  end if;
  if max_attempts is null or max_attempts not between 1 and 10000 then
    raise exception 'max_attempts must be between 1 and 10000, got %', coalesce(max_attempts::text, 'NULL')
      using errcode = '22023';
  end if;
  if window_minutes is null or window_minutes not between 1 and 10080 then
    raise exception 'window_minutes must be between 1 and 10080 (one week), got %',
      coalesce(window_minutes::text, 'NULL') using errcode = '22023';
  end if;

  win := pg_catalog.make_interval(mins => window_minutes);
  key := smsao.rate_limit_key();
  if key like 'ip:%' and (max_attempts > 100 or window_minutes > 60) then
    raise exception 'max_attempts must be at most 100 and window_minutes at most 60 for anonymous callers, got % and %',
      max_attempts, window_minutes using errcode = '22023';
  end if;

  -- 1. Full already? (committed state, no lock) Two full-primary-key lookups: the newest
  -- attempt's number first, so the second lookup is an equality on every key column.
  select k.admitted, k.denied_at into n, denied_at
  from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op;
  if n is not null then
    select h.at into full_at from smsao.rate_limit_hits h
    where h.caller_key = key and h.operation_type = op and h.seq = n - max_attempts + 1;
  end if;
  if full_at > pg_catalog.clock_timestamp() - win then
    if denied_at is null or denied_at <= pg_catalog.clock_timestamp() - win then
      perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
    end if;
    return false;
  end if;

  -- 2. Admit under the key's lock. The statements below take their snapshots after it was
  -- granted, so they see every attempt the previous holder committed. Each admission also
  -- drops the key's two oldest attempts once they can no longer decide any call, so a key
  -- keeps about what its windows hold.
  perform pg_catalog.pg_advisory_xact_lock(7411222, pg_catalog.hashtext(key || '|' || op));
  n := null;
  select k.admitted into n from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op;
  if n is not null then
    with k as (
      update smsao.rate_limit_keys k
         set admitted = k.admitted + 1,
             retain_count = greatest(k.retain_count, max_attempts),
             retain_window = greatest(k.retain_window, win),
             window_ends = greatest(k.window_ends, pg_catalog.clock_timestamp() + greatest(k.retain_window, win))
       where k.caller_key = key and k.operation_type = op
         and not exists (select from smsao.rate_limit_hits h
                         where h.caller_key = key and h.operation_type = op
                           and h.seq = n - max_attempts + 1
                           and h.at > pg_catalog.clock_timestamp() - win)
      returning k.admitted, k.retain_count, k.retain_window
    ), hit as (
      insert into smsao.rate_limit_hits (caller_key, operation_type, seq, at)
      select key, op, k.admitted, pg_catalog.clock_timestamp() from k
    )
    select k.admitted into recorded from k;
    if recorded is not null then
      -- The key's oldest attempt, then its two oldest deleted by full key.
      select o.seq into n from smsao.rate_limit_hits o
      where o.caller_key = key and o.operation_type = op order by o.seq limit 1;
      for i in 0..1 loop
        delete from smsao.rate_limit_hits h
        using smsao.rate_limit_keys k
        where k.caller_key = key and k.operation_type = op
          and h.caller_key = key and h.operation_type = op and h.seq = n + i
          and (h.seq <= k.admitted - k.retain_count or h.at < pg_catalog.clock_timestamp() - k.retain_window);
      end loop;
    end if;
  end if;
  if recorded is not null then
    return true;
  end if;
  if exists (select from smsao.rate_limit_keys k where k.caller_key = key and k.operation_type = op) then
    perform smsao.record_rate_limit_denial(key, op, max_attempts, window_minutes);
    return false;  -- filled up while this call waited for the lock
  end if;
  -- A new key (or one pruned since): its first attempt.
  insert into smsao.rate_limit_keys (caller_key, operation_type, admitted, retain_count, retain_window, window_ends)
  values (key, op, 1, max_attempts, win, pg_catalog.clock_timestamp() + win);
  insert into smsao.rate_limit_hits (caller_key, operation_type, seq, at)
  values (key, op, 1, pg_catalog.clock_timestamp())
  on conflict on constraint rate_limit_hits_pkey do update set at = excluded.at;
  return true;
end
$$;
