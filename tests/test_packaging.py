"""The built wheel works outside the source tree: the web console, the docs and every package
are in it (a missing package-data entry would only show once installed)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx

from tests.conftest import REPO, free_port, wait_until


def test_the_wheel_serves_the_console_and_docs_from_outside_the_source_tree(
    tmp_path: Path,
) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("eddy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "static/index.html",
        "static/console.js",
        "static/asyncapi.html",
        "static/vendor/asyncapi-react/index.js",
        "openapi/asyncapi.yaml",
        "routers/ws/protocol.py",
    } <= names

    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the source tree's
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--port", str(port), "--data-dir", "data"],
        cwd=tmp_path,  # not the source tree: imports come from the installed wheel
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(base + "/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=20)
        console = httpx.get(base + "/", timeout=5)
        assert console.status_code == 200 and "<html" in console.text.lower()
        assert httpx.get(base + "/static/console.js", timeout=5).status_code == 200
        assert httpx.get(base + "/docs", timeout=5).status_code == 200
        assert (
            httpx.get(base + "/asyncapi.yaml", timeout=5).content
            == (REPO / "openapi" / "asyncapi.yaml").read_bytes()
        )
        page = httpx.get(base + "/asyncapi", timeout=5, follow_redirects=True)
        assert page.status_code == 200 and "asyncapi-react/index.js" in page.text
        bundle = httpx.get(base + "/static/vendor/asyncapi-react/index.js", timeout=5)
        assert bundle.status_code == 200
    finally:
        server.terminate()
        server.communicate(timeout=20)
