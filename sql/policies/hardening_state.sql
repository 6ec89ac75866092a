-- Internal state of revision 0005_hardening (schema smsao, not exposed by PostgREST): only
-- the owner's SECURITY DEFINER functions and a DBA touch it. RLS without policies denies
-- anyone else who might be granted access by mistake.
alter table smsao.rate_limit_keys enable row level security;
revoke all on table smsao.rate_limit_keys from public, anon, authenticated, service_role;
alter table smsao.rate_limit_hits enable row level security;
revoke all on table smsao.rate_limit_hits from public, anon, authenticated, service_role;
alter table smsao.upsert_marks enable row level security;
revoke all on table smsao.upsert_marks from public, anon, authenticated, service_role;
alter table smsao.critical_operations enable row level security;
revoke all on table smsao.critical_operations from public, anon, authenticated, service_role;

-- Sequences, including the identity sequences of public tables: Supabase's default
-- privileges grant them to the app roles; identity columns need no sequence privilege.
do $$
declare
  seq regclass;
begin
  for seq in select c.oid from pg_catalog.pg_class c
             where c.relkind = 'S' and c.relnamespace in ('public'::regnamespace, 'smsao'::regnamespace) loop
    execute pg_catalog.format('revoke all on sequence %s from public, anon, authenticated, service_role', seq);
  end loop;
end
$$;
