-- Statement-level gates on the tables the app writes directly (through RLS): the
-- session must be valid and the operation within its rate limit, counted once per
-- statement (a 5,000-row import is one attempt). Writes made inside SECURITY DEFINER
-- functions or by trusted sessions run as another current_user and pass untouched.
create function smsao.guard_app_write() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  if current_user in ('authenticated', 'anon') then
    perform smsao.guard_critical(tg_table_name || '.' || pg_catalog.lower(tg_op), tg_argv[0],
                                 pg_catalog.jsonb_build_object('table', tg_table_name, 'operation', tg_op));
  end if;
  return null;
end
$$;
revoke all on function smsao.guard_app_write() from public;
