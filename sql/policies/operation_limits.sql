-- Internal state (schema smsao, not exposed by PostgREST): only the owner's
-- SECURITY DEFINER functions and a DBA touch it. RLS without policies denies anyone else
-- who might be granted access by mistake.
alter table smsao.operation_limits enable row level security;
revoke all on table smsao.operation_limits from public, anon, authenticated, service_role;
