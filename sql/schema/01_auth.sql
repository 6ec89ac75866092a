-- The slice of Supabase's `auth` schema this package relies on (CONTRACT section 1).
-- Each object is created only when missing, so a Supabase database keeps its own.
-- What we create carries the comment 'smsao-db shim' so a downgrade removes exactly that.
do $$
begin
  if to_regnamespace('auth') is null then
    create schema auth;
    comment on schema auth is 'smsao-db shim';
  end if;
  if to_regclass('auth.users') is null then
    create table auth.users (
      id                 uuid primary key,
      email              text,
      raw_user_meta_data jsonb not null default '{}'::jsonb,
      created_at         timestamptz not null default now(),
      updated_at         timestamptz not null default now()
    );
    comment on table auth.users is 'smsao-db shim';
  end if;

  if to_regclass('auth.sessions') is null then
    create table auth.sessions (
      id         uuid primary key,
      user_id    uuid not null references auth.users (id) on delete cascade,
      created_at timestamptz not null default now(),
      updated_at timestamptz not null default now(),
      not_after  timestamptz
    );
    create index sessions_user_id_idx on auth.sessions (user_id);
    comment on table auth.sessions is 'smsao-db shim';
  end if;

  -- Claims come from request.jwt.claims (PostgREST >= 9) or, for older PostgREST,
  -- request.jwt.claim.<name>. After a transaction both read as '' and mean "absent".
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
      language sql stable set search_path = ''
      as $f$
        select coalesce(
          nullif(pg_catalog.current_setting('request.jwt.claim', true), ''),
          nullif(pg_catalog.current_setting('request.jwt.claims', true), '')
        )::jsonb
      $f$;
    comment on function auth.jwt() is 'smsao-db shim';
  end if;

  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
      language sql stable set search_path = ''
      as $f$
        select coalesce(
          nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
          nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'
        )::uuid
      $f$;
    comment on function auth.uid() is 'smsao-db shim';
  end if;

  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text
      language sql stable set search_path = ''
      as $f$
        select coalesce(
          nullif(pg_catalog.current_setting('request.jwt.claim.role', true), ''),
          nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'
        )::text
      $f$;
    comment on function auth.role() is 'smsao-db shim';
  end if;
end
$$;

grant usage on schema auth to anon, authenticated, service_role;
