"""Test helpers: requests are made exactly as the app makes them (runner.request)."""
from runner.request import ANON, SERVICE, Caller, begin_request, request

__all__ = ["ANON", "SERVICE", "Caller", "begin_request", "request"]
