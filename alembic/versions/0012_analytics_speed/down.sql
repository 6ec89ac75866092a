-- Removes what 0012_analytics_speed added; restore.sql (run next, written by
-- scripts/freeze_sql.py --restore) puts back the released definitions of the analytics
-- functions (the funnel's step functions included) and of the internal tables' access.
drop trigger if exists business_events_analytics_update on public.business_events;
drop trigger if exists business_events_analytics_truncate on public.business_events;
drop function if exists smsao.analytics_events_update();
drop function if exists smsao.analytics_events_truncate();
drop function if exists smsao.record_event_firsts(text[], uuid[], timestamptz[]);
drop function if exists smsao.forget_event_firsts(text[], uuid[], timestamptz[]);
drop function if exists smsao.backfill_event_firsts();
drop function if exists smsao.funnel_first_sql(text);
drop function if exists smsao.funnel_next_sql(text, text);
drop table if exists smsao.event_firsts;
drop index if exists public.profiles_created_brin;
drop index if exists smsao.user_milestones_sent_sms_idx;
drop function if exists smsao.funnel_sql(text[]);
drop function if exists smsao.record_first_sms(uuid[], timestamptz[], timestamptz);
