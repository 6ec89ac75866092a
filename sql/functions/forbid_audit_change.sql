-- Audit trails are append-only. App roles hold no UPDATE/DELETE/TRUNCATE privilege on
-- them; this trigger also stops the owner, except for DELETE by the retention cleanup,
-- which runs as the owner and sets smsao.audit_retention for its own transaction.
create function smsao.forbid_audit_change() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  if tg_op = 'DELETE'
     and pg_catalog.current_setting('smsao.audit_retention', true) = 'on'
     and pg_catalog.pg_has_role(current_user,
           (select c.relowner from pg_catalog.pg_class c where c.oid = tg_relid), 'MEMBER') then
    return null;
  end if;
  raise exception '% on %.% is not allowed: audit trails are append-only',
    tg_op, tg_table_schema, tg_table_name
    using errcode = '42501';
end
$$;
revoke all on function smsao.forbid_audit_change() from public;
