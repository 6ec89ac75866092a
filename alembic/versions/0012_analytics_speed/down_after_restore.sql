-- Run after restore.sql on the downgrade: revision 0010's sent_sms trigger, whose function
-- restore.sql has just put back (0012 records sent_sms from the sms_logs insert counter).
create trigger sms_logs_analytics_insert
  after insert on public.sms_logs referencing new table as new_rows
  for each statement execute function smsao.analytics_sms_logs_insert();
