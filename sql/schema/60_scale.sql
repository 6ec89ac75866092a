-- Revision 0011_scale (issue 19): the rate limiter at one row write per admission.
-- A key whose largest limit is at most 100 attempts keeps its ring on the key row, as an
-- array: attempt j in ring[(j - 1) % ring_size + 1]. An admission is then one UPDATE of
-- that row (sql/functions/rate_limit.sql); its row lock serialises the key's admissions.
-- Keys of larger limits (up to 10,000) keep the ring in smsao.rate_limit_hits, as before,
-- and have ring = null.
alter table smsao.rate_limit_keys add column ring timestamptz[];
alter table smsao.rate_limit_keys add constraint rate_limit_keys_ring_check
  check (ring is null or (ring_size <= 100 and pg_catalog.array_lower(ring, 1) >= 1
                          and pg_catalog.array_upper(ring, 1) <= ring_size));

-- Keys of small limits move their ring from the hits table onto the key row: slot s of the
-- array holds the attempt the old ring kept in slot s % ring_size.
update smsao.rate_limit_keys k
   set ring = array(select h.at
                      from pg_catalog.generate_series(1, k.ring_size) s
                      left join smsao.rate_limit_hits h
                        on h.caller_key = k.caller_key and h.operation_type = k.operation_type
                       and h.slot = s % k.ring_size
                     order by s)
 where k.ring_size <= 100;
delete from smsao.rate_limit_hits h
 using smsao.rate_limit_keys k
 where h.caller_key = k.caller_key and h.operation_type = k.operation_type and k.ring is not null;
