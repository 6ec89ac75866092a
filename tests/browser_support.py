"""The dashboard's pages in a real browser (Debian's chromium through Playwright): the
module-scoped `browser` fixture that the web and analytics page tests import."""
from __future__ import annotations

from pathlib import Path

import pytest

from support import PROJECT_DIR

ARTIFACTS = PROJECT_DIR / "test-artifacts"   # screenshots of failing pages
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium is not installed (./dev test installs it)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()
