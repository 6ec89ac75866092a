alter table public.contacts enable row level security;
revoke all on table public.contacts from anon, authenticated, service_role;
grant select, insert, update, delete on table public.contacts to service_role;
grant select, insert, update, delete on table public.contacts to authenticated;

-- Contacts are personal data: owner only (admins read them through audited RPCs).
create policy contacts_own on public.contacts for all to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
