-- The analytics rollups follow the product's writes (sql/functions/analytics_triggers.sql):
-- statement-level with transition tables, one call per statement whatever its row count.
-- A trigger with transition tables takes one event, hence one trigger per event.

-- Milestones.
create trigger profiles_analytics_insert
  after insert on public.profiles referencing new table as new_rows
  for each statement execute function smsao.analytics_profiles_insert();
create trigger profiles_analytics_delete
  after delete on public.profiles referencing old table as old_rows
  for each statement execute function smsao.analytics_profiles_delete();
-- sent_sms: no trigger of its own; the sms_logs insert counter (sql/triggers/health_counters.sql)
-- hands it the statement's users (smsao.record_first_sms).
create trigger campaigns_analytics_insert
  after insert on public.campaigns referencing new table as new_rows
  for each statement execute function smsao.analytics_campaigns_insert();
create trigger contact_import_jobs_analytics_insert
  after insert on public.contact_import_jobs referencing new table as new_rows
  for each statement execute function smsao.analytics_import_jobs_written();
create trigger contact_import_jobs_analytics_update
  after update on public.contact_import_jobs referencing new table as new_rows
  for each statement execute function smsao.analytics_import_jobs_written();

-- Milestones and revenue: credit requests, refunds and prices.
create trigger credit_requests_analytics_insert
  after insert on public.credit_requests referencing new table as new_rows
  for each statement execute function smsao.analytics_credit_requests_insert();
create trigger credit_requests_analytics_update
  after update on public.credit_requests referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.analytics_credit_requests_update();
create trigger credit_requests_analytics_delete
  after delete on public.credit_requests referencing old table as old_rows
  for each statement execute function smsao.analytics_credit_requests_delete();
create trigger credit_requests_analytics_truncate
  after truncate on public.credit_requests
  for each statement execute function smsao.analytics_recount_all_months();

create trigger credit_transactions_analytics_insert
  after insert on public.credit_transactions referencing new table as new_rows
  for each statement execute function smsao.analytics_refunds_insert();
create trigger credit_transactions_analytics_update
  after update on public.credit_transactions referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.analytics_refunds_update();
create trigger credit_transactions_analytics_delete
  after delete on public.credit_transactions referencing old table as old_rows
  for each statement execute function smsao.analytics_refunds_delete();
create trigger credit_transactions_analytics_truncate
  after truncate on public.credit_transactions
  for each statement execute function smsao.analytics_recount_all_months();

create trigger credit_prices_analytics_insert
  after insert on public.credit_prices referencing new table as new_rows
  for each statement execute function smsao.analytics_prices_insert();
create trigger credit_prices_analytics_update
  after update on public.credit_prices referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.analytics_prices_update();
create trigger credit_prices_analytics_delete
  after delete on public.credit_prices referencing old table as old_rows
  for each statement execute function smsao.analytics_prices_delete();
create trigger credit_prices_analytics_truncate
  after truncate on public.credit_prices
  for each statement execute function smsao.analytics_recount_all_months();

-- Custom events.
create trigger business_events_analytics_insert
  after insert on public.business_events referencing new table as new_rows
  for each statement execute function smsao.analytics_events_insert();
create trigger business_events_analytics_delete
  after delete on public.business_events referencing old table as old_rows
  for each statement execute function smsao.analytics_events_delete();

-- Admins' changes to prices and spend, in admin_audit_logs.
create trigger credit_prices_audit_insert
  after insert on public.credit_prices referencing new table as new_rows
  for each statement execute function smsao.audit_analytics_insert();
create trigger credit_prices_audit_update
  after update on public.credit_prices referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.audit_analytics_update();
create trigger credit_prices_audit_delete
  after delete on public.credit_prices referencing old table as old_rows
  for each statement execute function smsao.audit_analytics_delete();
create trigger acquisition_spend_audit_insert
  after insert on public.acquisition_spend referencing new table as new_rows
  for each statement execute function smsao.audit_analytics_insert();
create trigger acquisition_spend_audit_update
  after update on public.acquisition_spend referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.audit_analytics_update();
create trigger acquisition_spend_audit_delete
  after delete on public.acquisition_spend referencing old table as old_rows
  for each statement execute function smsao.audit_analytics_delete();

-- Rollups start from the data already there (the triggers above hold their tables' locks
-- until the migration commits, so nothing changes in between).
select smsao.backfill_analytics();
