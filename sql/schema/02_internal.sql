-- Internal objects (helpers, configuration, hot state) live in `smsao`, a schema
-- PostgREST does not expose; only what the contract names lives in `public`.
create schema smsao;
comment on schema smsao is 'SMS AO internals: helpers, configuration and state not exposed as API';
grant usage on schema smsao to anon, authenticated, service_role;

create type public.app_role as enum ('admin', 'user');
