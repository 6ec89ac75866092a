"""The dashboard's Business page in a real browser (Chart.js charts, funnel bars, cohort
heatmap, steps chosen in the page), its CSV downloads, the served chart library, and the
analytics figures of /metrics."""
from __future__ import annotations

import csv
import http.client
import io
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analytics_support import add_sales
from browser_support import ARTIFACTS, browser  # noqa: F401 (a fixture)
from runner.monitoring.store import DashboardStore
from runner.web.app import DashboardServer



@pytest.fixture
def store(db):
    s = DashboardStore(db.url, pool_size=3).open()
    yield s
    s.close()


@pytest.fixture
def server(store):
    srv = DashboardServer("127.0.0.1", 0, store, refresh_seconds=0)
    srv.serve_in_thread()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(server, path: str) -> tuple[int, dict, str]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=20)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode()
    finally:
        conn.close()


@pytest.fixture
def history(db):
    """Three months of sales: three buyers last month, one again this month, an SMS, an event."""
    last_month, this_month, buyers = add_sales(db)
    db.sql("insert into public.acquisition_spend (month, channel, amount) values (%s, 'radio', 300)", [last_month.date()])
    db.sql("insert into public.business_events (user_id, event_name, occurred_at) values (%s, 'opened_app', %s)",
           [buyers[1], last_month + timedelta(days=1, hours=12)])
    db.months = (last_month.date(), this_month.date())
    return db


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 1000}, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.requests = requests
    yield pg
    context.close()
    assert errors == []


def test_the_business_page_charts_tables_funnel_and_heatmap(history, server, page):
    last, this = history.months
    page.goto(server.url + "/business?months=2")
    # Chart.js drew both charts, from the served copy (nothing loaded from elsewhere).
    assert page.evaluate("() => typeof Chart") == "function"
    assert page.evaluate("() => Chart.getChart('revenue-chart').data.datasets.map(d => d.data)") == [
        [750, 100], [0, 100]]
    assert page.evaluate("() => Chart.getChart('customers-chart').data.datasets.map(d => d.label)") == [
        "Paying", "New", "Churned"]
    assert all(url.startswith(server.url) for url in page.requests)
    rows = page.locator("#months-table tbody tr")
    assert rows.count() == 2
    assert page.locator(f'#months-table tr[data-month="{last}"] [data-col="revenue"]').inner_text() == "750.00"
    assert page.locator(f'#months-table tr[data-month="{last}"] [data-col="ltv_cac"]').inner_text() == "2.50"
    assert page.locator(f'#months-table tr[data-month="{this}"] [data-col="paying"]').inner_text() == "1"
    # The default funnel: four milestones, bars as wide as the conversion from the first step.
    assert page.locator("#funnel-table tbody tr").count() == 4
    assert page.locator('#funnel-table tr[data-step="4"] .bar').get_attribute("style") == "width: 33.3%"
    assert page.locator("#cohort-table tbody tr").count() == 2
    assert page.locator("#cohort-table tbody tr").first.locator("td.cell").all_inner_texts() == ["0%", "33%"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "business.png"), full_page=True)

    # Steps chosen in the page.
    page.fill('input[name="steps"]', "signed_up,opened_app,purchased_credits")
    page.click('form.controls button[type="submit"]')
    page.wait_for_selector('#funnel-table tr[data-step="3"]')
    assert page.locator("#funnel-table tbody tr").count() == 3
    assert page.locator("#funnel-table tbody tr td:nth-child(3)").all_inner_texts() == ["3", "1", "1"]

    with page.expect_download() as download:
        page.locator("#funnel a.csv").click()
    text = Path(download.value.path()).read_text()
    assert list(csv.reader(io.StringIO(text)))[0] == [
        "step", "event_name", "users", "conversion_from_first", "conversion_from_previous"]
    assert "opened_app" in text


def test_csv_of_each_table_and_bad_parameters(history, server):
    last, _ = history.months
    status, headers, body = get(server, "/business/months.csv?months=2")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [(r["month"], r["revenue"], r["cac"]) for r in rows][0] == (last.isoformat(), "750.0", "100.0")
    for table in ("funnel", "cohorts", "events"):
        status, _, body = get(server, f"/business/{table}.csv")
        assert status == 200 and body.count("\n") >= 2, table
    assert get(server, "/business/nothing.csv")[0] == 404
    for query, word in (("months=0", "months"), ("steps=signed_up", "steps"), ("steps=a,B%20x", "steps"),
                        ("since=yesterday", "since"), ("within=-1", "within"),
                        ("since=2026-02-01&until=2026-01-01", "until")):
        status, _, body = get(server, "/business?" + query)
        assert status == 400 and word in body, query


def test_the_chart_library_is_served_with_its_license(server):
    status, headers, body = get(server, "/static/chart.umd.min.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript") and "Chart" in body
    status, _, body = get(server, "/static/chart.js-LICENSE.md")
    assert status == 200 and "MIT License" in body
    assert get(server, "/static/../app.py")[0] == 404


def test_metrics_export_revenue_paying_customers_and_events(history, server):
    status, _, body = get(server, "/metrics")
    assert status == 200
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples[("smsao_revenue_month", ())] == 100.0
    assert samples[("smsao_paying_customers_month", ())] == 1.0
    assert samples[("smsao_events_total", (("event", "opened_app"),))] == 1.0
    assert samples[("smsao_events_total", (("event", "purchased_credits"),))] == 3.0
