-- Internal state (schema smsao): written by smsao.record_recovery_run(), read by the health
-- check (SECURITY DEFINER) and a DBA. RLS without policies denies anyone granted by mistake.
alter table smsao.recovery_runs enable row level security;
revoke all on table smsao.recovery_runs from public, anon, authenticated, service_role;
