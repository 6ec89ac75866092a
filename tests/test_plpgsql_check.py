"""plpgsql_check reports nothing on any PL/pgSQL function of the migrated database."""
from __future__ import annotations

# PL/pgSQL functions in our schemas, each with the relations it runs on: a trigger
# function is checked once per table it is attached to (with the transition table
# names of that trigger), other functions once without a relation.
TARGETS = """
select p.oid::regprocedure::text as func,
       t.tgrelid::regclass::text as rel,
       t.tgoldtable, t.tgnewtable,
       p.prorettype = 'trigger'::regtype as is_trigger
from pg_proc p
join pg_language l on l.oid = p.prolang and l.lanname = 'plpgsql'
left join pg_trigger t on t.tgfoid = p.oid and p.prorettype = 'trigger'::regtype
where p.pronamespace::regnamespace::text in ('public', 'smsao', 'auth')
  and not exists (select from pg_depend d where d.classid = 'pg_proc'::regclass
                  and d.objid = p.oid and d.deptype = 'e')
order by 1, 2
"""

CHECK = """
select level, lineno, sqlstate, message, detail, hint, query
from plpgsql_check_function_tb(%(func)s::regprocedure,
       relid => coalesce(%(rel)s::regclass, 0),
       oldtable => %(old)s, newtable => %(new)s,
       fatal_errors => false, other_warnings => true, extra_warnings => true,
       performance_warnings => true, security_warnings => true, compatibility_warnings => true)
"""

# Performance findings accepted on purpose: (function, message start), each with a
# comment saying why. Errors and warnings are never accepted. None needed so far.
ACCEPTED_PERFORMANCE: list[tuple[str, str]] = [
    # It runs a program (COPY ... FROM PROGRAM, necessarily dynamic: the program's path is
    # data): volatile by nature, which plpgsql_check cannot see through dynamic SQL.
    ("smsao.run_recovery_program(text)", "routine is marked as VOLATILE, should be STABLE"),
    # It detaches and drops partitions, through dynamic SQL plpgsql_check cannot classify.
    ("smsao.drop_expired_audit_partitions(text,timestamp with time zone,boolean)", "routine is marked as VOLATILE"),
]


def test_plpgsql_check_reports_nothing(db):
    db.sql("create extension if not exists plpgsql_check")
    targets = db.sql(TARGETS)
    assert any(func.startswith("smsao.") for func, *_ in targets)  # the query does find our functions
    findings = []
    for func, rel, old, new, is_trigger in targets:
        if is_trigger and rel is None:
            findings.append(f"{func}: trigger function attached to no table, so it cannot be checked")
            continue
        for level, lineno, sqlstate, message, detail, hint, query in db.sql(
                CHECK, {"func": func, "rel": rel, "old": old, "new": new}):
            if level == "performance" and any(
                    func == f and message.startswith(m) for f, m in ACCEPTED_PERFORMANCE):
                continue
            where = f"{func}" + (f" on {rel}" if rel else "") + f" line {lineno}"
            findings.append(f"{where}: {level} {sqlstate}: {message}"
                            + (f" ({detail})" if detail else "") + (f" hint: {hint}" if hint else "")
                            + (f" in: {query}" if query else ""))
    assert not findings, f"{len(findings)} plpgsql_check finding(s):\n" + "\n".join(findings)
