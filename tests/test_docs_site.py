"""The documentation site (mkdocs.yml, docs/): `mkdocs build --strict` passes, so no link or
anchor is broken and no page is left out of the navigation; and the built site, served from a
loopback port, renders in chromium with every request going to that port only (no fonts,
scripts or documents from the internet): the OpenAPI page shows every operation of the
checked-in document, the AsyncAPI page renders the WebSocket and SSE channels, and the pictures
load."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from tests.browser import browser_fixture
from tests.conftest import REPO

__all__ = ["browser_fixture"]


def nav_pages() -> list[str]:
    """The URL paths of every Markdown page in mkdocs.yml's navigation (other helpers add
    pages: the test follows the navigation)."""
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())

    def walk(items: list[Any]) -> Iterator[str]:
        for item in items:
            for value in item.values() if isinstance(item, dict) else [item]:
                if isinstance(value, list):
                    yield from walk(value)
                else:
                    yield value

    paths = []
    for source in walk(config["nav"]):
        stem = source.removesuffix(".md")
        paths.append("" if stem == "index" else stem.removesuffix("/index") + "/")
    return paths


PAGES = nav_pages()


@pytest.fixture(scope="module", name="site")
def site_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module", name="site_url")
def site_url_fixture(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(name="page")
def page_fixture(browser: Browser, site_url: str) -> Iterator[Page]:
    """A page whose requests may only go to the site's own server (others are aborted and
    fail the test), and whose script errors fail it too."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside: list[str] = []
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def only_the_site(route: Any) -> None:
        if route.request.url.startswith(site_url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_site)
    yield page
    page.close()
    assert outside == [], outside
    assert errors == [], errors


def test_every_page_of_the_navigation_is_built(site: Path) -> None:
    assert len(PAGES) >= 18 and "api/openapi/" in PAGES and "api/asyncapi/" in PAGES
    for path in PAGES:
        assert (site / path / "index.html").is_file(), path
    for extra in ("api/openapi.json", "api/asyncapi.yaml", "assets/asyncapi-react/index.js"):
        assert (site / extra).is_file(), extra
    # The site's copy of the API document is the checked-in one (which CI compares with the
    # server's): the reference pages show what the server serves.
    assert (site / "api" / "openapi.json").read_bytes() == (
        REPO / "openapi" / "openapi.json"
    ).read_bytes()


@pytest.mark.parametrize("path", PAGES)
def test_each_page_renders_offline_with_its_pictures(page: Page, site_url: str, path: str) -> None:
    page.goto(site_url + path)
    expect(page.locator("article h1").first).to_be_visible()
    broken = page.evaluate(
        "[...document.querySelectorAll('article img')]"
        ".filter((img) => !(img.complete && img.naturalWidth > 0)).map((img) => img.src)"
    )
    assert broken == []


def test_the_openapi_page_shows_every_operation(page: Page, site_url: str) -> None:
    document = json.loads((REPO / "openapi" / "openapi.json").read_text())
    operations = sum(
        1
        for item in document["paths"].values()
        for method in item
        if method in {"get", "post", "put", "patch", "delete", "head"}
    )
    page.goto(site_url + "api/openapi/")
    frame = page.frame_locator("iframe.swagger-ui-iframe")
    expect(frame.locator(".opblock").first).to_be_visible(timeout=30_000)
    expect(frame.locator(".opblock")).to_have_count(operations)


def test_the_asyncapi_page_renders_the_websocket_and_sse_channels(
    page: Page, site_url: str
) -> None:
    page.goto(site_url + "api/asyncapi/")
    expect(
        page.locator("#asyncapi #introduction").get_by_text("Eddy WebSocket and SSE")
    ).to_be_visible(timeout=30_000)
    for heading in ("SEND /v1/topics/{topic}/events", "REPLY /v1/topics/{topic}/publish"):
        expect(page.get_by_role("heading", name=heading).first).to_be_attached()
