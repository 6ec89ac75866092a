-- Event triggers of the audit partitions (sql/functions/audit_partitions.sql). Creating an
-- event trigger needs a superuser (or, on Supabase, the postgres role that supautils lets
-- do it): where that is missing the migration still applies, says so, and the daily job's
-- smsao.secure_audit_partitions() is the backstop.
do $$
begin
  drop event trigger if exists smsao_secure_audit_partitions;
  create event trigger smsao_secure_audit_partitions on ddl_command_end
    when tag in ('CREATE TABLE', 'ALTER TABLE')
    execute function smsao.secure_new_audit_partitions();
  drop event trigger if exists smsao_guard_audit_partition_drop;
  create event trigger smsao_guard_audit_partition_drop on sql_drop
    when tag in ('DROP TABLE', 'ALTER TABLE')
    execute function smsao.guard_audit_partition_drop();
exception when insufficient_privilege then
  raise warning 'audit partitions: no privilege to create event triggers (%); new partitions are secured by the daily job only, and drops are not guarded', sqlerrm;
end
$$;

-- The partitions made by the migration (or by pg_partman before the triggers existed).
select smsao.secure_audit_partitions();
