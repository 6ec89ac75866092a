alter table public.credit_transactions enable row level security;
revoke all on table public.credit_transactions from anon, authenticated, service_role;
-- The ledger is append-only, even for the backend.
grant select, insert on table public.credit_transactions to service_role;
grant select on table public.credit_transactions to authenticated;

create policy credit_transactions_select on public.credit_transactions for select to authenticated
  using (user_id = (select auth.uid()) or (select smsao.is_admin()));
