alter table public.contact_import_jobs enable row level security;
revoke all on table public.contact_import_jobs from anon, authenticated, service_role;
grant select, insert, update, delete on table public.contact_import_jobs to service_role;
grant select, insert on table public.contact_import_jobs to authenticated;

drop policy if exists contact_import_jobs_select on public.contact_import_jobs;
create policy contact_import_jobs_select on public.contact_import_jobs for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
-- Users with an active account queue their own imports; the backend moves them through
-- their states.
drop policy if exists contact_import_jobs_insert_own on public.contact_import_jobs;
create policy contact_import_jobs_insert_own on public.contact_import_jobs for insert to authenticated
  with check (user_id = (select auth.uid()) and (select smsao.is_active_user()) and status = 'pending'
              and processed_rows = 0 and completed_at is null);
