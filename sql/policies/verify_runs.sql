-- Owner only: a verify run connects as the owner or a superuser. RLS without policies
-- denies anyone who might be granted access by mistake.
alter table smsao.verify_runs enable row level security;
revoke all on table smsao.verify_runs from public, anon, authenticated, service_role;
