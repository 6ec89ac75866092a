"""One `integrity` check: a query that returns a line per violation, and what to do about it.
Its own module so that every capability can declare checks (runner/recovery/integrity.py runs
them all, runner/analytics/checks.py adds the rollups') without importing one another."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    name: str
    description: str
    query: str
    remedy: str
