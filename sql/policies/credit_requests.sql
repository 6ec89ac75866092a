alter table public.credit_requests enable row level security;
revoke all on table public.credit_requests from anon, authenticated, service_role;
grant select, insert, update, delete on table public.credit_requests to service_role;
-- Requests are created and processed only through the rate-limited, audited RPCs.
grant select on table public.credit_requests to authenticated;

create policy credit_requests_select on public.credit_requests for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
