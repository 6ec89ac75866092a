-- Revision 0007_alive: the scheduler seen as it runs over time.
-- Which login scheduled the jobs (smsao.record_schedule_state): pg_cron shows a job only
-- to its owner, so the health check can say why it cannot see them.
alter table smsao.scheduler_state add column scheduled_by text;
