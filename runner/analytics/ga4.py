"""`smsao-db analytics export --ga4`: send the queued events (smsao.ga4_outbox) with the GA4
Measurement Protocol.

    POST https://www.google-analytics.com/mp/collect?measurement_id=G-...&api_secret=...
    {"client_id": "<pseudonym>", "events": [{"name": ..., "params": {...}}, ...]}   (<= 25 events)

One request carries the events of one pseudonymous user (a request has one client_id),
oldest first. A batch is marked sent in the database only after the endpoint answered 2xx,
in a transaction of its own: a crash loses nothing (the batch is sent again on the next
run) and a batch that was marked is never sent again. The only way an event can reach GA4
twice is a 2xx that was lost on the way back (the endpoint took it, then the connection
dropped before we read the answer); each event carries `smsao_event_id` so such a duplicate
can be told apart downstream. Exports do not overlap: a session-level advisory lock.

5xx answers, 429, timeouts and dropped connections are retried with exponential backoff
(and jitter); any other 4xx stops the export with one line (wrong measurement id or secret,
or a payload GA4 refuses), leaving the batch queued. `--validate` sends to
/debug/mp/collect, which checks the events and records nothing: nothing is marked sent.
"""
from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import psycopg

from runner.db import connect
from runner.errors import UserError

DEFAULT_ENDPOINT = "https://www.google-analytics.com"
MAX_EVENTS = 25              # the Measurement Protocol's limit per request
LOCK = (7411240, 1)          # one export at a time (advisory lock keys of the analytics)


@dataclass
class ExportResult:
    batches: int = 0
    events: int = 0
    retries: int = 0
    validation_messages: list = field(default_factory=list)


class TransientError(Exception):
    """Worth retrying: a 5xx or 429, a timeout, a dropped connection."""


def post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "smsao-db"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        raise TransientError(f"no answer from {urlsplit(url).netloc}: {getattr(exc, 'reason', exc)}") from None
    if status >= 500 or status == 429:
        raise TransientError(f"{urlsplit(url).netloc} answered {status}")
    raise UserError(f"GA4 refused the events ({status}): {text[:200].decode(errors='replace')} -- "
                    "check --measurement-id and --api-secret")


def send_with_retries(url: str, body: bytes, *, attempts: int, base_delay: float, timeout: float,
                      result: ExportResult, sleep=time.sleep) -> bytes:
    for attempt in range(1, attempts + 1):
        try:
            return post(url, body, timeout)[1]
        except TransientError as exc:
            if attempt == attempts:
                raise UserError(f"GA4 export stopped after {attempts} attempts: {exc}; "
                                "the unsent events stay queued for the next run") from None
            result.retries += 1
            sleep(base_delay * 2 ** (attempt - 1) * (1 + random.random() / 2))
    raise AssertionError("unreachable")


def next_batch(conn: psycopg.Connection) -> list[tuple]:
    """The oldest unsent event and up to 24 more of the same user, oldest first."""
    return conn.execute("""
        with first as (select o.client_id from smsao.ga4_outbox o where o.sent_at is null order by o.id limit 1)
        select o.id, o.client_id, o.event_name, o.params, o.occurred_at
        from smsao.ga4_outbox o, first f
        where o.sent_at is null and o.client_id = f.client_id
        order by o.id limit %s""", [MAX_EVENTS]).fetchall()


def payload(batch: list[tuple]) -> dict:
    return {
        "client_id": batch[0][1],
        "user_id": batch[0][1],
        "events": [{"name": name,
                    "params": {**{k: v for k, v in (params or {}).items()},
                               "smsao_event_id": str(event_id),
                               "engagement_time_msec": 1},
                    "timestamp_micros": int(at.timestamp() * 1_000_000)}
                   for event_id, _, name, params, at in batch],
    }


def collect_url(endpoint: str, measurement_id: str, api_secret: str, validate: bool) -> str:
    if not urlsplit(endpoint).scheme in ("http", "https") or not urlsplit(endpoint).netloc:
        raise UserError(f"--endpoint must be an http(s) URL such as {DEFAULT_ENDPOINT}, got {endpoint!r}")
    path = "/debug/mp/collect" if validate else "/mp/collect"
    return f"{endpoint.rstrip('/')}{path}?{urlencode({'measurement_id': measurement_id, 'api_secret': api_secret})}"


def export(url: str, measurement_id: str | None, api_secret: str | None, *, endpoint: str = DEFAULT_ENDPOINT,
           validate: bool = False, limit: int | None = None, attempts: int = 6, base_delay: float = 0.5,
           timeout: float = 10.0, sleep=time.sleep) -> ExportResult:
    """Send queued events until none is left (or `limit` batches were sent)."""
    if not measurement_id or not api_secret:
        raise UserError("GA4 needs --measurement-id and --api-secret (or SMSAO_GA4_MEASUREMENT_ID and "
                        "SMSAO_GA4_API_SECRET)")
    target = collect_url(endpoint, measurement_id, api_secret, validate)
    result = ExportResult()
    with connect(url, autocommit=True) as conn:
        if conn.execute("select to_regclass('smsao.ga4_outbox') is null").fetchone()[0]:
            raise UserError("this database has no GA4 outbox yet: run `smsao-db migrate upgrade head`")
        if not conn.execute("select pg_try_advisory_lock(%s, %s)", LOCK).fetchone()[0]:
            raise UserError("another GA4 export is running on this database; try again when it ends")
        try:
            while limit is None or result.batches < limit:
                batch = next_batch(conn)
                if not batch:
                    break
                answer = send_with_retries(target, json.dumps(payload(batch)).encode(), attempts=attempts,
                                           base_delay=base_delay, timeout=timeout, result=result, sleep=sleep)
                if validate:
                    result.validation_messages += json.loads(answer or b"{}").get("validationMessages", [])
                    result.batches, result.events = result.batches + 1, result.events + len(batch)
                    break   # the debug endpoint records nothing: one batch shows whether they pass
                conn.execute("update smsao.ga4_outbox set sent_at = now() where id = any(%s) and sent_at is null",
                             [[row[0] for row in batch]])
                result.batches, result.events = result.batches + 1, result.events + len(batch)
        finally:
            conn.execute("select pg_advisory_unlock(%s, %s)", LOCK)
    return result
