-- Statement-level, so the guard costs nothing per inserted row.
create trigger admin_audit_logs_append_only
  before update or delete or truncate on public.admin_audit_logs
  for each statement execute function smsao.forbid_audit_change();

create trigger pii_access_audit_append_only
  before update or delete or truncate on public.pii_access_audit
  for each statement execute function smsao.forbid_audit_change();

create trigger function_call_audit_append_only
  before update or delete or truncate on public.function_call_audit
  for each statement execute function smsao.forbid_audit_change();
