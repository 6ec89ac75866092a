-- Revision 0012_analytics_speed (issue 18): the funnel answers from indexes and a per-user
-- first-occurrence table instead of probing every starting user's events.

-- signed_up is profiles.created_at: a funnel's first step (and the cohorts) read the signups
-- of a time range here instead of scanning every profile. A BRIN index: profiles are written
-- in signup order, so block ranges follow created_at, and it costs an update of profiles
-- (credits, status: most are not HOT on full pages) next to nothing, where a btree index
-- beside the primary key measured 1.10-1.14x on status updates (bench/analytics_bench.py).
create index profiles_created_brin on public.profiles using brin (created_at);

-- Each user's first occurrence of each custom event, kept by the business_events triggers
-- in the writing transaction (sql/functions/analytics_triggers.sql). A funnel step needs a
-- user's earliest occurrence at or after their previous step's time: that is first_at
-- whenever the row is exact and first_at is at or after that time; otherwise the funnel
-- probes business_events for that user (smsao.funnel_next_step). No row: no such event.
--
-- exact = false after a deletion (or an update) took away an occurrence at first_at: first_at
-- is then only a lower bound of the user's occurrences (there may be none left). Marking it
-- is one row update under the row's lock, so it stays right beside concurrent inserts in any
-- isolation level, where recounting the user's events could miss one not yet visible. An
-- earlier occurrence written later makes the row exact again; smsao.rebuild_analytics()
-- recounts every row.
create table smsao.event_firsts (
  event_name text not null,
  user_id    uuid not null,
  first_at   timestamptz not null,
  exact      boolean not null default true,
  primary key (event_name, user_id)
);
-- A funnel step reads the firsts of its time window in one range, user and flag included.
create index event_firsts_time_idx on smsao.event_firsts (event_name, first_at) include (user_id, exact);

-- Every SMS statement asks which of its users had sent before (sql/functions/
-- analytics_triggers.sql, smsao.record_first_sms): answered from this index alone,
-- a probe is half the cost of the primary key's (which visits the table for first_at), and a
-- pass over all senders reads only theirs. Written only on a user's first SMS.
create index user_milestones_sent_sms_idx on smsao.user_milestones (user_id) include (first_at)
  where milestone = 'sent_sms';

-- sent_sms is recorded from the sms_logs insert counter's own grouping of the statement's rows
-- (smsao.count_sms_logs_insert calls smsao.record_first_sms): its trigger of revision 0010 goes.
drop trigger if exists sms_logs_analytics_insert on public.sms_logs;
drop function if exists smsao.analytics_sms_logs_insert();

-- The funnel became one query built per call (smsao.funnel_first_sql, smsao.funnel_next_sql):
-- the step functions of revision 0010, which passed arrays of users from step to step, go.
drop function if exists smsao.funnel_first_step(text, timestamptz, timestamptz);
drop function if exists smsao.funnel_next_step(text, uuid[], timestamptz[], timestamptz[], interval);
