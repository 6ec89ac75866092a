-- Revision 0012_analytics_speed: the custom events' first occurrences (smsao.event_firsts)
-- follow every change of business_events. Inserts and deletions go through the triggers of
-- sql/triggers/analytics.sql (their functions maintain it too); updates and TRUNCATE here.
create trigger business_events_analytics_update
  after update on public.business_events referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.analytics_events_update();
create trigger business_events_analytics_truncate
  after truncate on public.business_events
  for each statement execute function smsao.analytics_events_truncate();

-- The first occurrences of the events already there. Creating the triggers above locked
-- business_events against writes until the migration commits: none is missed.
select smsao.backfill_event_firsts();
