-- Revision 0008_pgtap: the mark of a verify run (`smsao-db verify`, sql/tests/*.sql).
-- The critical operations count their calls, errors and refusals in sequences, which a
-- rollback does not undo (sql/schema/40_hardening.sql). The package's tests provoke
-- refusals and errors on purpose inside a transaction that is rolled back; counted, they
-- would show in production's error rate. So each test file inserts one row here, inside its
-- transaction, and smsao.count_call / smsao.count_failure count nothing while that
-- transaction's own row is visible to it. No other transaction sees an uncommitted row, a
-- row that was committed by mistake names another transaction id, and no app role may
-- insert here: no real caller can hide its figures this way.
create table smsao.verify_runs (
  xact_id    xid8 primary key default pg_catalog.pg_current_xact_id(),
  started_at timestamptz not null default pg_catalog.now()
);
comment on table smsao.verify_runs is
  'Marks the transaction of a verify run (sql/tests): its provoked calls are not counted. Owner only; always empty outside a run.';
