-- Removes what 0010_analytics added (nothing released was changed, so nothing to restore).
drop trigger if exists profiles_analytics_insert on public.profiles;
drop trigger if exists profiles_analytics_delete on public.profiles;
drop trigger if exists sms_logs_analytics_insert on public.sms_logs;
drop trigger if exists campaigns_analytics_insert on public.campaigns;
drop trigger if exists contact_import_jobs_analytics_insert on public.contact_import_jobs;
drop trigger if exists contact_import_jobs_analytics_update on public.contact_import_jobs;
drop trigger if exists credit_requests_analytics_insert on public.credit_requests;
drop trigger if exists credit_requests_analytics_update on public.credit_requests;
drop trigger if exists credit_requests_analytics_delete on public.credit_requests;
drop trigger if exists credit_requests_analytics_truncate on public.credit_requests;
drop trigger if exists credit_transactions_analytics_insert on public.credit_transactions;
drop trigger if exists credit_transactions_analytics_update on public.credit_transactions;
drop trigger if exists credit_transactions_analytics_delete on public.credit_transactions;
drop trigger if exists credit_transactions_analytics_truncate on public.credit_transactions;

drop table if exists public.credit_prices, public.acquisition_spend, public.business_events;
drop table if exists smsao.user_milestones, smsao.milestones, smsao.event_counts, smsao.business_month_marks,
  smsao.ga4_settings, smsao.ga4_export_events, smsao.ga4_outbox;
drop function if exists public.track_event(text, jsonb);
drop function if exists public.business_metrics(date, date);
drop function if exists public.conversion_funnel(text[], timestamptz, timestamptz, interval);
drop function if exists public.retention_cohorts(date, date);
drop function if exists public.set_ga4_export(text, boolean);
drop function if exists public.analytics_live_figures();
drop function if exists smsao.fresh_business_months();
drop function if exists smsao.count_business_months(date, date);
drop table if exists smsao.business_months;
drop index if exists public.credit_requests_approved_at_idx;
drop index if exists public.credit_requests_approved_user_idx;
drop index if exists public.credit_transactions_refund_at_idx;
delete from smsao.operation_limits where operation_type = 'analytics_event';

-- Every function the revision's files define (the remaining ones).
do $$
declare
  f regprocedure;
begin
  for f in select p.oid from pg_catalog.pg_proc p
           where p.pronamespace = 'smsao'::regnamespace
             and p.proname in ('utc_month', 'utc_day', 'month_start', 'bump_event_counts',
               'ga4_pseudonym', 'queue_ga4', 'record_milestones', 'mark_business_months',
               'refresh_business_months', 'is_milestone', 'carries_personal_data', 'guard_analytics_read',
               'check_month_argument', 'check_month_range', 'funnel_first_step', 'funnel_next_step',
               'backfill_analytics', 'rebuild_analytics')
                or p.proname like 'analytics\_%' or p.proname like 'audit\_analytics\_%' loop
    execute pg_catalog.format('drop function %s', f);
  end loop;
end
$$;
