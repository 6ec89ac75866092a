-- Internal state (schema smsao): only the owner's SECURITY DEFINER functions and a DBA.
alter table smsao.scheduler_state enable row level security;
revoke all on table smsao.scheduler_state from public, anon, authenticated, service_role;
