alter table public.otp_codes enable row level security;
revoke all on table public.otp_codes from anon, authenticated, service_role;
-- OTPs are issued and checked by the backend only; no policy for app users.
grant select, insert, update, delete on table public.otp_codes to service_role;
