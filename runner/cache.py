"""An in-memory TTL cache for data read from this database (CONTRACT section 6).

    from runner import cache
    profile = cache.get_or_fetch(cache.profile_key(uid), lambda: load_profile(uid))
    cache.listen(DATABASE_URL)        # drop what other processes change (NOTIFY)

Storage is `cachetools.TLRUCache` (LRU bounded by `maxsize`, expiry per entry, so
`ttl=` can differ per key). On top of it this module adds what an app sharing one cache
between threads needs: a lock, single flight per key (concurrent misses on one key run
`fetch` once; the others wait for its result or its exception), glob invalidation, and
statistics. Triggers in the database (sql/triggers/cache_invalidation.sql) send
`NOTIFY cache_invalidation` with a JSON array of the keys and patterns a committed
statement made stale; `CacheInvalidationListener` applies them to a cache.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable

import cachetools
import psycopg
from psycopg import sql

from runner.db import libpq_url, redact_message

DEFAULT_TTL = 300.0  # seconds
DEFAULT_MAXSIZE = 10_000
CHANNEL = "cache_invalidation"
_MISSING = object()
_WILDCARDS = re.compile(r"[*?\[]")
log = logging.getLogger(__name__)


# -- key helpers: the names the database triggers use -------------------------------------
def profile_key(user_id) -> str:
    return f"profile:{user_id}"


def credits_key(user_id) -> str:
    return f"credits:{user_id}"


def contacts_key(user_id) -> str:
    return f"contacts:{user_id}"


def campaigns_key(user_id) -> str:
    return f"campaigns:{user_id}"


def sms_logs_key(user_id, page: int) -> str:
    return f"sms_logs:{user_id}:{page}"


def sms_logs_pattern(user_id) -> str:
    """Every cached page of a user's SMS log (one new log row shifts them all)."""
    return f"sms_logs:{user_id}:*"


def dashboard_stats_key(user_id) -> str:
    return f"dashboard_stats:{user_id}"


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    fetches: int         # fetch functions actually run
    coalesced: int       # misses that waited for another caller's fetch instead
    fetch_errors: int
    invalidations: int   # entries dropped by invalidate/invalidate_pattern/clear
    size: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class _Flight:
    """One running fetch that other callers of the same key wait for."""
    __slots__ = ("done", "value", "error", "stale", "owner")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.stale = False  # invalidated while fetching: hand out, but do not cache
        self.owner = threading.get_ident()

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class Cache:
    """Thread-safe TTL cache with single-flight `get_or_fetch`.

    `timer` is injectable (any monotonic clock returning seconds) so tests can move time."""

    def __init__(self, ttl: float = DEFAULT_TTL, maxsize: int = DEFAULT_MAXSIZE,
                 timer: Callable[[], float] = time.monotonic):
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.default_ttl = float(ttl)
        # Entries are (value, ttl) so that each may live for its own ttl and None is cacheable.
        self._data = cachetools.TLRUCache(maxsize, lambda _k, entry, now: now + entry[1], timer)
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()
        self._hits = self._misses = self._fetches = self._coalesced = 0
        self._errors = self._invalidations = 0

    # -- reading -------------------------------------------------------------------------
    def get(self, key: Hashable, default: Any = None) -> Any:
        with self._lock:
            try:
                entry = self._data[key]  # one lookup; Mapping.get would do two
            except KeyError:
                self._misses += 1
                return default
            self._hits += 1
            return entry[0]

    def get_or_fetch(self, key: Hashable, fetch: Callable[[], Any], ttl: float | None = None) -> Any:
        """The cached value, or `fetch()`'s result, cached for `ttl` seconds.

        Concurrent calls for one key run `fetch` once. If it raises, every waiting caller
        gets the exception and nothing is cached. A value whose key was invalidated while
        it was being fetched is returned but not cached: it may predate the change."""
        with self._lock:
            try:
                entry = self._data[key]
            except KeyError:
                pass
            else:
                self._hits += 1
                return entry[0]
            self._misses += 1
            flight = self._flights.get(key)
            if flight is None:
                flight = self._flights[key] = _Flight()
                leader = True
            else:
                if flight.owner == threading.get_ident():
                    raise RuntimeError(f"fetch for cache key {key!r} asked for the same key")
                self._coalesced += 1
                leader = False
        if not leader:
            return flight.result()

        try:
            value = fetch()
        except BaseException as exc:
            with self._lock:
                self._fetches += 1
                self._errors += 1
                del self._flights[key]
            flight.error = exc
            flight.done.set()
            raise
        with self._lock:
            self._fetches += 1
            del self._flights[key]
            if not flight.stale:
                self._store(key, value, ttl)
        flight.value = value
        flight.done.set()
        return value

    # -- writing -------------------------------------------------------------------------
    def set(self, key: Hashable, value: Any, ttl: float | None = None) -> None:
        with self._lock:
            self._store(key, value, ttl)

    def _store(self, key: Hashable, value: Any, ttl: float | None) -> None:
        ttl = self.default_ttl if ttl is None else float(ttl)
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self._data[key] = (value, ttl)

    def invalidate(self, key: Hashable) -> bool:
        """Drop one key; True when it was cached. A fetch in progress for it is not cached."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                flight.stale = True
            found = self._data.pop(key, _MISSING) is not _MISSING
            self._invalidations += found
            return found

    def invalidate_pattern(self, pattern: str) -> int:
        """Drop every string key matching an fnmatch pattern ('contacts:*'); returns how many."""
        if not _WILDCARDS.search(pattern):
            return int(self.invalidate(pattern))
        match = re.compile(fnmatch.translate(pattern)).match
        with self._lock:
            for key, flight in self._flights.items():
                if isinstance(key, str) and match(key):
                    flight.stale = True
            doomed = [k for k in self._data if isinstance(k, str) and match(k)]
            for k in doomed:
                self._data.pop(k, None)
            self._invalidations += len(doomed)
            return len(doomed)

    def clear(self) -> None:
        with self._lock:
            for flight in self._flights.values():
                flight.stale = True
            self._invalidations += len(self._data)
            self._data.clear()

    def apply_invalidation(self, payload: str) -> int:
        """Apply one `cache_invalidation` notification: a JSON array of keys and patterns.
        Anything unreadable clears the whole cache: stale data is worse than a miss."""
        try:
            items = json.loads(payload)
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise ValueError("not a JSON array of strings")
        except ValueError:
            log.warning("unreadable cache_invalidation payload %r: clearing the cache", payload[:200])
            n = len(self)
            self.clear()
            return n
        return sum(self.invalidate_pattern(i) for i in items)

    # -- introspection -------------------------------------------------------------------
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(self._hits, self._misses, self._fetches, self._coalesced,
                              self._errors, self._invalidations, len(self._data))

    def reset_stats(self) -> None:
        with self._lock:
            self._hits = self._misses = self._fetches = self._coalesced = 0
            self._errors = self._invalidations = 0

    def __len__(self) -> int:
        with self._lock:
            self._data.expire()
            return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def listen(self, url: str, **kwargs) -> "CacheInvalidationListener":
        """Start a background listener that applies the database's invalidations here."""
        return CacheInvalidationListener(self, url, **kwargs).start()


class CacheInvalidationListener:
    """LISTENs on `cache_invalidation` in a daemon thread and drops the keys it names.

    Notifications sent while the connection was down are lost, so after every
    (re)connect the whole cache is cleared once: correctness over hit rate."""

    def __init__(self, cache: Cache, url: str, *, channel: str = CHANNEL,
                 poll_interval: float = 0.5, max_backoff: float = 10.0):
        self.cache = cache
        self.url = url
        self.channel = channel
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.listening = threading.Event()  # set while LISTEN is active
        self.connects = 0
        self.applied = 0
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._thread = threading.Thread(target=self._run, name="cache-invalidation", daemon=True)

    def start(self) -> "CacheInvalidationListener":
        self._thread.start()
        return self

    def wait_listening(self, timeout: float = 10.0) -> bool:
        return self.listening.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def __enter__(self) -> "CacheInvalidationListener":
        return self.start() if not self._thread.is_alive() else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def backend_pid(self) -> int | None:
        """The server process of the listening connection (tests terminate it)."""
        conn = self._conn
        return conn.info.backend_pid if conn is not None and not conn.closed else None

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            try:
                with psycopg.connect(libpq_url(self.url), autocommit=True, connect_timeout=10) as conn:
                    self._conn = conn
                    conn.execute(sql.SQL("listen {}").format(sql.Identifier(self.channel)))
                    self.cache.clear()
                    self.connects += 1
                    self.listening.set()
                    backoff = 0.2
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=self.poll_interval):
                            self.applied += 1
                            self.cache.apply_invalidation(note.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    break
                log.warning("cache invalidation listener lost its connection (%s); retrying in %.1fs",
                            redact_message(str(exc).strip().splitlines()[0], self.url) if str(exc).strip()
                            else type(exc).__name__,
                            backoff)
            finally:
                self.listening.clear()
                self._conn = None
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.max_backoff)


# -- a process-wide default cache, for apps that want module-level calls -------------------
default_cache = Cache()
get = default_cache.get
set = default_cache.set  # noqa: A001 - the contract's name
get_or_fetch = default_cache.get_or_fetch
invalidate = default_cache.invalidate
invalidate_pattern = default_cache.invalidate_pattern
clear = default_cache.clear
stats = default_cache.stats
listen = default_cache.listen
