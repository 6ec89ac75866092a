-- Keep smsao.health_counters in step with the counted tables (sql/functions/health_counters.sql).
-- Statement-level with transition tables: one trigger call per statement, whatever its
-- row count. A trigger with transition tables takes one event, hence one per event.

create trigger profiles_count_insert
  after insert on public.profiles referencing new table as new_rows
  for each statement execute function smsao.count_profiles_insert();
create trigger profiles_count_delete
  after delete on public.profiles referencing old table as old_rows
  for each statement execute function smsao.count_profiles_delete();

create trigger credit_requests_count_insert
  after insert on public.credit_requests referencing new table as new_rows
  for each statement execute function smsao.count_credit_requests_insert();
create trigger credit_requests_count_update
  after update on public.credit_requests referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.count_credit_requests_update();
create trigger credit_requests_count_delete
  after delete on public.credit_requests referencing old table as old_rows
  for each statement execute function smsao.count_credit_requests_delete();

create trigger sms_logs_count_insert
  after insert on public.sms_logs referencing new table as new_rows
  for each statement execute function smsao.count_sms_logs_insert();
create trigger sms_logs_count_update
  after update on public.sms_logs referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.count_sms_logs_update();
create trigger sms_logs_count_delete
  after delete on public.sms_logs referencing old table as old_rows
  for each statement execute function smsao.count_sms_logs_delete();

create trigger otp_codes_count_insert
  after insert on public.otp_codes referencing new table as new_rows
  for each statement execute function smsao.count_otp_codes_insert();
create trigger otp_codes_count_update
  after update on public.otp_codes referencing old table as old_rows new table as new_rows
  for each statement execute function smsao.count_otp_codes_update();
create trigger otp_codes_count_delete
  after delete on public.otp_codes referencing old table as old_rows
  for each statement execute function smsao.count_otp_codes_delete();

-- Rare whole-table events: recount from scratch.
create trigger profiles_recount_on_truncate
  after truncate on public.profiles
  for each statement execute function smsao.recount_health_counters_trigger();
create trigger credit_requests_recount_on_truncate
  after truncate on public.credit_requests
  for each statement execute function smsao.recount_health_counters_trigger();
create trigger sms_logs_recount_on_truncate
  after truncate on public.sms_logs
  for each statement execute function smsao.recount_health_counters_trigger();
create trigger otp_codes_recount_on_truncate
  after truncate on public.otp_codes
  for each statement execute function smsao.recount_health_counters_trigger();
-- A profile whose user_id changes moves the ownership of rows in both directions.
create trigger profiles_recount_on_rekey
  after update of user_id on public.profiles
  for each row when (old.user_id is distinct from new.user_id)
  execute function smsao.recount_health_counters_trigger();

-- Counters start from the data already there (the triggers above hold their tables'
-- locks until the migration commits, so nothing changes in between).
select smsao.recount_health_counters();
