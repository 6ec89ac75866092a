-- Revision 0014_large_rings (issue 19): an admission at a large limit is one row write too.
-- A key of a large limit (101 to 10,000 attempts) keeps its newest attempts, up to 100, in
-- the array on its key row, appended in order; the older ones stay in smsao.rate_limit_hits.
-- Every 100th admission moves the full array there in one statement
-- (sql/functions/rate_limit.sql). Every key now has an array: the keys of large limits start
-- with an empty one (all their attempts are in the hits table), and so does a key written
-- without one.
alter table smsao.rate_limit_keys drop constraint rate_limit_keys_ring_check;
update smsao.rate_limit_keys set ring = '{}' where ring is null;
alter table smsao.rate_limit_keys alter column ring set not null, alter column ring set default '{}',
  add constraint rate_limit_keys_ring_check
    check (pg_catalog.cardinality(ring) = 0
           or (pg_catalog.array_lower(ring, 1) >= 1
               and pg_catalog.array_upper(ring, 1) <= least(ring_size, 100)));
