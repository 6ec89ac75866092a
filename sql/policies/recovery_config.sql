-- Internal state (schema smsao): written by `smsao-db up` as the owner; read when the jobs
-- are listed. It names a program that pg_cron runs as the server's OS user: nobody else.
alter table smsao.recovery_config enable row level security;
revoke all on table smsao.recovery_config from public, anon, authenticated, service_role;
