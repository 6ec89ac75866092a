-- Internal state (schema smsao, not exposed by PostgREST): only the owner's
-- SECURITY DEFINER functions and a DBA touch it. RLS without policies denies anyone else
-- who might be granted access by mistake.
alter table smsao.rate_limit_windows enable row level security;
revoke all on table smsao.rate_limit_windows from public, anon, authenticated, service_role;
