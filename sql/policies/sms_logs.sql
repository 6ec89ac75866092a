alter table public.sms_logs enable row level security;
revoke all on table public.sms_logs from anon, authenticated, service_role;
-- Logs are written by the sending backend; users only read theirs.
grant select, insert, update, delete on table public.sms_logs to service_role;
grant select on table public.sms_logs to authenticated;

create policy sms_logs_select on public.sms_logs for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
