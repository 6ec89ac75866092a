-- A user reads only their own events (written by public.track_event); admins read the
-- aggregates through the analytics functions, not the rows. The backend reads them and
-- may record events on a user's behalf (the table's checks hold for it too).
alter table public.business_events enable row level security;
revoke all on table public.business_events from public, anon, authenticated, service_role;
grant select on table public.business_events to authenticated;
grant select, insert on table public.business_events to service_role;

drop policy if exists business_events_select_own on public.business_events;
create policy business_events_select_own on public.business_events for select to authenticated
  using (user_id = (select auth.uid()));
drop policy if exists business_events_service on public.business_events;
create policy business_events_service on public.business_events for all to service_role
  using (true) with check (true);
