-- Revision 0013_scale_speed (issue 19): an admission at a large limit is one row write too.
-- Keys of limits above 100 (up to 10,000) keep their ring in chunks of 100 attempts, one row
-- per chunk, the chunk's attempts as an array (as a small ring lives on its key row):
--   attempt j is at position p(j) = (j - 1) % ring_size of the ring, that is in chunk
--   p(j) / 100, element p(j) % 100 + 1; `last` is the newest attempt written into the chunk.
-- Chunks are filled in order, so exactly one chunk is "open" (the position after its `last`
-- is still inside it): the head chunk, where the next admission goes. An admission inside
-- the head chunk is one conditional UPDATE of that row (sql/functions/rate_limit.sql): the
-- row's lock serialises the key's admissions, and the key row is not written. The key row's
-- `admitted` becomes, for these keys, a hint: an attempt of the head chunk, moved (with
-- window_ends) only when an admission crosses into the next chunk, one call in 100.
-- Why chunks and not one array: an array of 10,000 stamps (80 kB) is TOASTed, and changing
-- one element rewrites all of it; a chunk of 100 (800 bytes) stays on its heap page and is
-- updated in place (HOT). Why not one row per attempt with a head hint probed forward: the
-- calls that queue on the same attempt row all fail their re-check but one, and go round;
-- on a chunk row the re-check takes the next attempt number from the row itself, so a
-- queued call is admitted after its wait, as on the key row of a small ring.
-- The table keeps its name (smsao.rate_limit_hits: the attempts of large rings) and changes
-- shape; the rings of revision 0011 (one row per attempt, slot seq % ring_size) move in.
alter table smsao.rate_limit_hits rename to rate_limit_hits_0011;
alter table smsao.rate_limit_hits_0011 rename constraint rate_limit_hits_pkey to rate_limit_hits_0011_pkey;

create unlogged table smsao.rate_limit_hits (
  caller_key     text not null,
  operation_type text not null,
  chunk          integer not null check (chunk between 0 and 99),
  -- The newest attempt written into this chunk (its number on the key).
  last           bigint not null check (last >= 1),
  -- ring[i]: the attempt at position chunk * 100 + i - 1 (null: none yet, first lap).
  ring           timestamptz[] not null
                 check (pg_catalog.array_lower(ring, 1) = 1 and pg_catalog.array_upper(ring, 1) <= 100),
  constraint rate_limit_hits_pkey primary key (caller_key, operation_type, chunk)
) with (fillfactor = 50);  -- an 850-byte row: room on its page for its HOT updates
-- (RLS on and no privilege: sql/policies/hardening_state.sql, applied by this revision too.)

-- The attempts each large key's ring holds, max(1, admitted - ring_size + 1) .. admitted,
-- grouped by chunk; an attempt the old ring lacks counts as outside every window.
insert into smsao.rate_limit_hits (caller_key, operation_type, chunk, last, ring)
select k.caller_key, k.operation_type, ((j - 1) % k.ring_size / 100)::integer, max(j),
       pg_catalog.array_agg(coalesce(h.at, '-infinity') order by (j - 1) % k.ring_size)
  from smsao.rate_limit_keys k
 cross join lateral pg_catalog.generate_series(greatest(k.admitted - k.ring_size + 1, 1), k.admitted) j
  left join smsao.rate_limit_hits_0011 h
    on h.caller_key = k.caller_key and h.operation_type = k.operation_type
   and h.slot = j % k.ring_size and h.seq = j
 where k.ring is null
 group by k.caller_key, k.operation_type, ((j - 1) % k.ring_size / 100)::integer;
drop table smsao.rate_limit_hits_0011;

-- The audit trails' primary key leads with the partition key: (created_at, id) instead of
-- (id, created_at), and the separate index on created_at goes. One index fewer to write per
-- audit row (a single-row INSERT into a partitioned table pays for routing it and opening
-- the partition, about what the second index cost: docs/scaling.md, section 2c), and the
-- key serves what that index served (the retention's batches by created_at) and the
-- dashboard's pages (order by created_at desc, id desc) by itself. Its uniqueness is the
-- same: the same two columns. No query looks a row up by id alone. The partitions' keys are
-- rebuilt with it (the migration holds the tables for that time).
alter table public.admin_audit_logs drop constraint admin_audit_logs_pkey,
  add constraint admin_audit_logs_pkey primary key (created_at, id);
drop index public.admin_audit_logs_created_idx;
alter table public.pii_access_audit drop constraint pii_access_audit_pkey,
  add constraint pii_access_audit_pkey primary key (created_at, id);
drop index public.pii_access_audit_created_idx;
alter table public.function_call_audit drop constraint function_call_audit_pkey,
  add constraint function_call_audit_pkey primary key (created_at, id);
drop index public.function_call_audit_created_idx;
