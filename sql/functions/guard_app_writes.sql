-- Statement-level gates on the tables the app writes directly (through RLS): the
-- session must be valid and the operation within its rate limit, counted once per
-- statement (a 5,000-row import is one attempt). Writes made inside SECURITY DEFINER
-- functions or by trusted sessions run as another current_user and pass untouched.
create or replace function smsao.guard_app_write() returns trigger
  language plpgsql
  set search_path = ''
as $$
begin
  if current_user in ('authenticated', 'anon') then
    perform smsao.guard_app_statement(tg_table_name, tg_op, tg_argv[0]);
  end if;
  return null;
end
$$;
revoke all on function smsao.guard_app_write() from public, anon, authenticated, service_role;

-- The gate itself, with the owner's rights (it writes the rate-limit state and the upsert
-- mark). App roles can execute it only because the trigger runs with their rights; called
-- anywhere but from a trigger it refuses.
-- One statement is one attempt, whatever its form: INSERT ... ON CONFLICT DO UPDATE fires
-- the BEFORE INSERT and then the BEFORE UPDATE statement triggers, so the INSERT gate marks
-- its statement (smsao.upsert_marks) and the UPDATE gate that finds the mark passes it;
-- the statement's AFTER INSERT trigger removes the mark (smsao.clear_upsert_mark).
create or replace function smsao.guard_app_statement(table_name text, operation text, operation_type text)
  returns void
  language plpgsql security definer
  set search_path = ''
as $$
declare
  function_name text := table_name || '.' || pg_catalog.lower(operation);
begin
  if pg_catalog.pg_trigger_depth() < 1 then
    raise exception 'guard_app_statement runs only from the write triggers' using errcode = '42501';
  end if;
  if operation = 'UPDATE' and table_name = 'contacts' then
    delete from smsao.upsert_marks m
    where m.backend_pid = pg_catalog.pg_backend_pid() and m.xact_id = pg_catalog.pg_current_xact_id();
    if found then
      return;  -- the UPDATE half of an upsert whose INSERT half was counted
    end if;
  end if;
  perform smsao.count_call(operation_type);
  begin
    perform smsao.guard_critical(function_name, operation_type,
                                 pg_catalog.jsonb_build_object('table', table_name, 'operation', operation));
  exception when others then
    perform smsao.count_failure(operation_type, sqlstate);
    raise;
  end;
  if operation = 'INSERT' and table_name = 'contacts' then
    insert into smsao.upsert_marks (backend_pid, xact_id)
    values (pg_catalog.pg_backend_pid(), pg_catalog.pg_current_xact_id())
    on conflict do nothing;
  end if;
end
$$;
revoke all on function smsao.guard_app_statement(text, text, text) from public, anon, authenticated, service_role;
grant execute on function smsao.guard_app_statement(text, text, text) to anon, authenticated;

-- AFTER INSERT (statement) on contacts: the statement is over, so is its upsert mark.
create or replace function smsao.clear_upsert_mark() returns trigger
  language plpgsql security definer
  set search_path = ''
as $$
begin
  delete from smsao.upsert_marks m
  where m.backend_pid = pg_catalog.pg_backend_pid() and m.xact_id = pg_catalog.pg_current_xact_id();
  return null;
end
$$;
revoke all on function smsao.clear_upsert_mark() from public, anon, authenticated, service_role;
