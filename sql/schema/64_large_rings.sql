-- Revision 0014_large_rings (issue 19): an admission at a large limit is one row write too.
-- A key of a large limit (101 to 10,000 attempts) keeps its newest attempts, up to 100, in
-- the array on its key row, appended in order, and the older ones the ring spans in
-- smsao.rate_limit_hits, now in chunks of 100: one row per chunk (chunk c holds attempts
-- 100c + 1 .. 100c + 100 in stamps[1..100], in slot c % (ring_size / 100 + 2), rounded up).
-- The admission that finds the array full (one in 100) moves it there as one chunk row
-- (sql/functions/rate_limit.sql). Every key has an array now (a key written without one
-- gets an empty one). A large key also keeps on its row a copy of the chunk that holds the
-- attempt deciding its next call (due_chunk, due): chunks never change once written, and
-- the copy spares the admission a read of the hits table, but for one call in 100.

-- The existing large rings, one row per attempt (attempt s in slot s % ring_size), become
-- chunks up to their last multiple of 100 and an array of the newer attempts, converted in
-- place: the chunk rows go in under negative slots while the attempt rows still hold theirs,
-- then the attempt rows go and the chunks take their slots. An attempt the ring no longer
-- kept is '-infinity' (outside every window), as smsao.grow_rate_limit_ring writes it.
alter table smsao.rate_limit_keys drop constraint rate_limit_keys_ring_check;
alter table smsao.rate_limit_hits add column stamps timestamptz[];
insert into smsao.rate_limit_hits (caller_key, operation_type, slot, seq, at, stamps)
select k.caller_key, k.operation_type, -1 - (c % ((k.ring_size + 99) / 100 + 1))::integer, c, '-infinity',
       array(select coalesce(h.at, '-infinity')
               from pg_catalog.generate_series(c * 100 + 1, c * 100 + 100) j
               left join smsao.rate_limit_hits h
                 on h.caller_key = k.caller_key and h.operation_type = k.operation_type
                and h.slot = j % k.ring_size and h.seq = j
              order by j)
  from smsao.rate_limit_keys k,
       pg_catalog.generate_series((greatest(k.admitted - k.ring_size + 1, 1) - 1) / 100, k.admitted / 100 - 1) c
 where k.ring is null;
update smsao.rate_limit_keys k
   set ring = array(select coalesce(h.at, '-infinity')
                      from pg_catalog.generate_series(k.admitted / 100 * 100 + 1, k.admitted) j
                      left join smsao.rate_limit_hits h
                        on h.caller_key = k.caller_key and h.operation_type = k.operation_type
                       and h.slot = j % k.ring_size and h.seq = j
                     order by j)
 where k.ring is null;
delete from smsao.rate_limit_hits where stamps is null;
update smsao.rate_limit_hits set slot = -1 - slot;
alter table smsao.rate_limit_hits drop column at, alter column stamps set not null;
alter table smsao.rate_limit_hits rename column seq to chunk;

alter table smsao.rate_limit_keys add column due_chunk bigint, add column due timestamptz[],
  alter column ring set not null, alter column ring set default '{}',
  add constraint rate_limit_keys_ring_check
    check (pg_catalog.cardinality(ring) = 0
           or (pg_catalog.array_lower(ring, 1) >= 1
               and pg_catalog.array_upper(ring, 1) <= least(ring_size, 100)));
