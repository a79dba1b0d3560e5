"""The browser stack shared by the browser tests (the console, eddy.js): Debian's chromium driven
by Playwright for Python. Required, not optional: when Playwright or chromium is missing these
tests fail (CI installs them with `.ci/install-debian-packages.sh` and the dev extras); they
never skip."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    from playwright.sync_api import Browser, expect, sync_playwright
except ImportError as exc:  # a failure, not a skip: CI must have the browser stack
    raise ImportError(
        "Playwright for Python is required by the browser tests: pip install 'playwright' "
        "(never `playwright install`: the tests use Debian's chromium, see "
        ".ci/install-debian-packages.sh)"
    ) from exc

CHROMIUM = os.environ.get("EDDY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator[Browser]:
    """One chromium per test module (import `browser_fixture` to use the `browser` fixture)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"chromium not found at {CHROMIUM}: run `bash .ci/install-debian-packages.sh` "
            "(or set EDDY_CHROMIUM to a chromium binary)"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()
