"""`smsao-db analytics report`: the database's figures, as a table and as JSON."""
from __future__ import annotations

import json

from analytics_support import add_sales
from cli_support import smsao_db


def test_report_shows_the_months_funnel_cohorts_and_events(db):
    last_month, this_month, buyers = add_sales(db)
    db.sql("insert into public.acquisition_spend (month, channel, amount) values (%s, 'radio', 300)", [this_month.date()])
    db.sql("insert into public.business_events (user_id, event_name, occurred_at) values (%s, 'opened_app', %s)",
           [buyers[1], this_month])

    proc = smsao_db("analytics", "report", "--json", "--months", "2", url=db.url)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert [(m["month"], m["revenue"], m["paying_customers"], m["new_paying_customers"], m["churned_customers"],
             m["mrr"], m["cac"]) for m in report["months"]] == [
        (last_month.date().isoformat(), 750.0, 3, 3, 0, 0.0, 0.0),
        (this_month.date().isoformat(), 100.0, 1, 0, 2, 100.0, None)]
    assert [(s["event_name"], s["users"]) for s in report["funnel"]] == [
        ("signed_up", 3), ("requested_credits", 3), ("purchased_credits", 3), ("sent_sms", 1)]
    assert {(c["cohort_month"], c["months_since"]): (c["cohort_size"], c["active_users"]) for c in report["cohorts"]} \
        == {(last_month.date().isoformat(), 0): (3, 0), (last_month.date().isoformat(), 1): (3, 1),
            (this_month.date().isoformat(), 0): (0, 0)}
    assert {e["event_name"]: e["events"] for e in report["events"]}["opened_app"] == 1

    table = smsao_db("analytics", "report", "--months", "2", url=db.url)
    assert table.returncode == 0 and "Business metrics" in table.stdout and "purchased_credits" in table.stdout
    assert "750.00" in table.stdout


def test_report_refuses_a_bad_month_count_in_one_line(db):
    proc = smsao_db("analytics", "report", "--months", "0", url=db.url)
    assert proc.returncode != 0 and proc.stderr.strip().count("\n") == 0 and "--months" in proc.stderr


def test_demo_data_gives_18_months_of_plausible_history(db):
    from runner import demo
    from runner.analytics import report
    from runner.recovery import integrity

    assert demo.load(db.url)
    with db.connect() as conn:
        rep = report.fetch_from(conn, months=18)
    months = rep.months
    assert len(months) == 18
    assert all(m["revenue"] > 0 and m["paying_customers"] > 0 and m["acquisition_spend"] > 0 for m in months)
    assert sum(m["churned_customers"] for m in months) > 0 and all(m["ltv"] for m in months)
    # A growing user base: the last six months bring more new customers than the first six.
    assert sum(m["new_paying_customers"] for m in months[-6:]) > sum(m["new_paying_customers"] for m in months[:6])
    assert db.sql("select count(distinct price_per_credit) from public.credit_prices") == [(2,)]
    assert rep.funnel[0]["users"] > rep.funnel[-1]["users"] > 0
    assert any(c["months_since"] > 0 and c["active_users"] > 0 for c in rep.cohorts)
    assert [r.name for r in integrity.run(db.url) if not r.passed] == []
    assert not demo.load(db.url)   # a second run adds nothing
    assert db.one("select count(*) from public.credit_prices") == 2
