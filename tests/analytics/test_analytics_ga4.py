"""The GA4 export against a local endpoint that answers as the Measurement Protocol does,
and fails as networks do: 5xx, a dropped connection, a timeout. Every queued event arrives
exactly once, in requests of at most 25 events of one pseudonymous user, and a run that
stops half way resumes where it stopped."""
from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from cli_support import smsao_db
from runner.analytics import ga4
from runner.errors import UserError


class Endpoint:
    """A stand-in for www.google-analytics.com. `script` says how to answer the next
    requests in turn (then 204): an HTTP status, 'drop' (close without answering, the
    request not taken) or 'slow' (answer after the client's timeout, not taken)."""

    def __init__(self, script=()):
        self.script = list(script)
        self.taken: list[dict] = []      # bodies accepted with a 2xx
        self.requests: list[tuple] = []  # (path, query) of every request
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                parts = urlsplit(self.path)
                endpoint.requests.append((parts.path, parse_qs(parts.query)))
                action = endpoint.script.pop(0) if endpoint.script else 204
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action == "slow":
                    threading.Event().wait(1.5)
                    return
                if 200 <= action < 300 and parts.path == "/mp/collect":
                    endpoint.taken.append(body)
                answer = json.dumps({"validationMessages": []} if parts.path.startswith("/debug") else {}).encode()
                self.send_response(action)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def event_ids(self) -> Counter:
        return Counter(e["params"]["smsao_event_id"] for body in self.taken for e in body["events"])


@pytest.fixture
def queued(db):
    """70 opted-in events: 60 of one user, 10 of another; plus one not opted in."""
    admin = db.create_user(admin=True)
    db.sql("select set_config('request.jwt.claims', %s, false)", [json.dumps({"sub": str(admin), "role": "authenticated"})])
    db.sql("select public.set_ga4_export('opened_app', true)")
    db.sql("select set_config('request.jwt.claims', '', false)")
    a, b = db.create_user(), db.create_user()
    db.sql("""insert into public.business_events (user_id, event_name, properties, occurred_at)
              select case when i <= 60 then %s::uuid else %s::uuid end, 'opened_app', jsonb_build_object('n', i),
                     now() - (70 - i) * interval '1 second'
              from generate_series(1, 70) i""", [a, b])
    db.sql("insert into public.business_events (user_id, event_name) values (%s, 'not_exported')", [a])
    db.users = (a, b)
    return db


def export(db, endpoint, **kw):
    kw.setdefault("base_delay", 0.01)
    kw.setdefault("timeout", 1.0)
    return ga4.export(db.url, "G-TEST123", "s3cret", endpoint=endpoint.url, **kw)


def test_every_event_arrives_once_through_a_flaky_endpoint(queued):
    with Endpoint([500, "drop", 503, 204, "slow", 502, 204]) as endpoint:
        result = export(queued, endpoint)
    ids = endpoint.event_ids()
    assert len(ids) == 70 and set(ids.values()) == {1}
    assert result.events == 70 and result.batches == 4 and result.retries == 5
    assert [len(body["events"]) for body in endpoint.taken] == [25, 25, 10, 10]
    for body in endpoint.taken:
        assert len({body["client_id"]}) == 1 and len(body["client_id"]) == 64
        assert not any(str(u) in json.dumps(body) for u in queued.users)
    assert endpoint.requests[0][1] == {"measurement_id": ["G-TEST123"], "api_secret": ["s3cret"]}
    assert {path for path, _ in endpoint.requests} == {"/mp/collect"}
    assert queued.one("select count(*) from smsao.ga4_outbox where sent_at is null") == 0
    # Nothing left: a second run sends nothing.
    with Endpoint() as again:
        assert export(queued, again).events == 0 and again.requests == []


def test_a_stopped_export_resumes_without_duplicates(queued):
    with Endpoint() as endpoint:
        assert export(queued, endpoint, limit=1).events == 25
        # The endpoint keeps failing: the run gives up, the batch stays queued.
        endpoint.script = [500, 500, 500]
        with pytest.raises(UserError, match="stopped after 3 attempts"):
            export(queued, endpoint, attempts=3)
        assert queued.one("select count(*) from smsao.ga4_outbox where sent_at is null") == 45
        export(queued, endpoint)
    ids = endpoint.event_ids()
    assert len(ids) == 70 and set(ids.values()) == {1}


def test_a_refusal_is_one_line_and_marks_nothing(queued):
    with Endpoint([403]) as endpoint:
        with pytest.raises(UserError, match=r"GA4 refused the events \(403\)"):
            export(queued, endpoint)
    assert queued.one("select count(*) from smsao.ga4_outbox where sent_at is not null") == 0


def test_validate_uses_the_debug_endpoint_and_marks_nothing(queued):
    with Endpoint() as endpoint:
        result = export(queued, endpoint, validate=True)
    assert [path for path, _ in endpoint.requests] == ["/debug/mp/collect"]
    assert result.events == 25 and result.validation_messages == []
    assert queued.one("select count(*) from smsao.ga4_outbox where sent_at is not null") == 0


def test_the_command(queued):
    with Endpoint([500]) as endpoint:
        proc = smsao_db("analytics", "export", "--ga4", "--measurement-id", "G-X", "--api-secret", "k",
                        "--endpoint", endpoint.url, url=queued.url)
        assert proc.returncode == 0 and "sent 70 event(s) in 4 request(s) (1 retried)" in proc.stdout, \
            proc.stdout + proc.stderr
    missing = smsao_db("analytics", "export", "--ga4", url=queued.url)
    assert missing.returncode != 0 and "--measurement-id" in missing.stderr and "Traceback" not in missing.stderr
    bad = smsao_db("analytics", "export", "--ga4", "--measurement-id", "G-X", "--api-secret", "k",
                   "--endpoint", "nowhere", url=queued.url)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "--endpoint" in bad.stderr
