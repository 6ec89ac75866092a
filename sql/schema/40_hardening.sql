-- Revision 0005_hardening: the rate limiter's state in O(1)-per-call form, and the call
-- counters of the critical operations that survive a rollback.

-- Rate-limit state (replaces smsao.rate_limit_windows, whose array was unnested and sorted
-- on every call). One row per (caller, operation), and a ring of its newest admitted
-- attempts: attempts are numbered 1, 2, 3... per key and attempt n lives in slot
-- n % ring_size, so "the max_attempts-th newest attempt" is one primary-key lookup and an
-- admission overwrites one slot in place. A call admits when that attempt is missing or
-- older than the window: its work does not depend on how many attempts the window holds.
-- UNLOGGED: it is hot, and losing it in a crash only forgets recent attempts.
create unlogged table smsao.rate_limit_keys (
  caller_key     text not null,
  operation_type text not null,
  -- The number of the newest admitted attempt (attempts ever admitted on this key).
  admitted       bigint not null,
  -- Attempts kept: the largest max_attempts used on this key.
  ring_size      integer not null check (ring_size between 1 and 10000),
  -- The longest window used on this key; past window_ends every attempt has left every
  -- window used, and the key (with its ring) can be pruned.
  retain_window  interval not null,
  window_ends    timestamptz not null,
  -- When the last refusal was written to function_call_audit: at most one row per window.
  denied_at      timestamptz,
  primary key (caller_key, operation_type)
) with (fillfactor = 70);  -- room on the page for HOT updates (no indexed column changes)

create unlogged table smsao.rate_limit_hits (
  caller_key     text not null,
  operation_type text not null,
  slot           integer not null,        -- seq % ring_size of the key
  seq            bigint not null,         -- the attempt's number on its key
  at             timestamptz not null,    -- when it was admitted (after the key's lock)
  primary key (caller_key, operation_type, slot)
) with (fillfactor = 70);  -- an admission overwrites its slot: a HOT update
-- No index on window_ends: every admission moves it, and an indexed column would make each
-- admission a non-HOT update with a new index entry. The prune (once a minute) scans instead.

-- Calls, errors and refusals of the critical operations, counted by sequences because a
-- sequence advances even when the transaction that called nextval() rolls back: a refused
-- or failed call raises, and the raise would take any row it wrote with it.
--   smsao.rpc_<name>_calls     every call that reached the operation
--   smsao.rpc_<name>_errors    calls that ended in an error other than a refusal
--   smsao.rpc_<name>_refusals  calls refused: 42501 (denied) or PT429 (rate limited)
-- The names of the operations are the rows of smsao.critical_operations.
-- A crash may advance a sequence by up to 32 (its WAL is written ahead in steps of 32):
-- the figures are counts for monitoring, not for billing.
create table smsao.critical_operations (
  name        text primary key check (name ~ '^[a-z][a-z0-9_]{0,40}$'),
  description text not null
);
insert into smsao.critical_operations (name, description) values
  ('request_credits', 'public.request_credits()'),
  ('approve_credit_request', 'public.approve_credit_request()'),
  ('reject_credit_request', 'public.reject_credit_request()'),
  ('admin_set_user_status', 'public.admin_set_user_status()'),
  ('admin_get_user_details', 'public.admin_get_user_details()'),
  ('admin_list_users', 'public.admin_list_users()'),
  ('profile_update', 'UPDATE of public.profiles by the app (one per statement)'),
  ('contact_operation', 'INSERT/UPDATE/DELETE of public.contacts by the app (one per statement)');

do $$
declare
  op text;
  kind text;
begin
  for op in select c.name from smsao.critical_operations c loop
    foreach kind in array array['calls', 'errors', 'refusals'] loop
      execute pg_catalog.format('create sequence smsao.%I as bigint',
                                'rpc_' || op || '_' || kind);
    end loop;
  end loop;
end
$$;

-- Marks an INSERT statement on contacts whose ON CONFLICT DO UPDATE will fire the UPDATE
-- statement trigger too (PostgreSQL fires both): the gate counts such an upsert once.
-- Written only by the owner's SECURITY DEFINER gate, so an app session cannot forge it
-- the way it could forge a setting; the mark lives from the statement's BEFORE triggers
-- to its AFTER INSERT trigger.
create unlogged table smsao.upsert_marks (
  backend_pid integer not null,
  xact_id     xid8 not null,
  primary key (backend_pid, xact_id)
);
