"""The built wheel works outside the source tree: the web console, the docs and every package
are in it (a missing package-data entry would only show once installed), under one import
package, `eddy`, so it installs beside other projects' `app` or `models` packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx

from tests.conftest import REPO, free_port, serve_in_thread, wait_until


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
        "eddy/__main__.py",
        "eddy/static/index.html",
        "eddy/static/console.js",
        "eddy/static/asyncapi.html",
        "eddy/static/vendor/asyncapi-react/index.js",
        "eddy/openapi/asyncapi.yaml",
        "eddy/routers/ws/protocol.py",
        "eddy/storage/kafka/engine.py",
        "eddy/app/cli.py",
        "eddy/client/__init__.py",
        "eddy/client/py.typed",
    } <= names
    # exactly one top-level import package (plus the dist-info)
    top_level = {name.split("/", 1)[0] for name in names}
    assert {t for t in top_level if not t.endswith(".dist-info")} == {"eddy"}, top_level

    site = tmp_path / "site"
    # Another project's generic packages, already installed where the wheel goes.
    for other in ("app", "models"):
        (site / other).mkdir(parents=True)
        (site / other / "__init__.py").write_text(f"OWNER = 'another project ({other})'\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        capture_output=True,
    )
    for other in ("app", "models"):  # untouched by the install
        assert "another project" in (site / other / "__init__.py").read_text()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import app, models, eddy, eddy.app.resources as r, eddy.client;"
            "assert app.OWNER.startswith('another') and models.OWNER.startswith('another');"
            "print(eddy.__file__, r.static_dir())",
        ],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    # the wheel's copies, not the source tree's
    assert all(path.startswith(str(site)) for path in where), where

    # The wheel's `eddy` script: it writes the same OpenAPI document as the source tree's.
    eddy = site / "bin" / "eddy"
    exported = subprocess.run(
        [str(eddy), "export-openapi", "--out", "spec/openapi.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert exported.returncode == 0, exported.stderr
    spec = json.loads((tmp_path / "spec" / "openapi.json").read_text())
    assert spec == json.loads((REPO / "openapi" / "openapi.json").read_text())
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "eddy", "serve", "--port", str(port), "--data-dir", "data"],
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


def test_the_docker_image_installs_the_wheel_and_its_healthcheck_follows_eddy_port(
    tmp_path: Path,
) -> None:
    """No Docker daemon in CI: the Dockerfile's health check command runs here as the image's
    shell would run it, against a real server, with EDDY_PORT set as `docker run -e` would."""
    dockerfile = (REPO / "Dockerfile").read_text()
    run_stage = dockerfile.split("\nFROM ")[-1]  # the final stage: what the image runs
    assert "pip install --no-cache-dir /wheels/*.whl" in run_stage
    assert "COPY app" not in run_stage and "-e ." not in dockerfile  # no sources, no editable
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".git", ".venv", "node_modules", "eddy-data", "build"} <= ignored

    check = dockerfile.split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].split("\n#", 1)[0].strip()

    def healthy(port: int) -> bool:
        env = {"PATH": os.environ["PATH"], "EDDY_PORT": str(port)}
        command = check.replace("python ", f"{sys.executable} ", 1)
        return (
            subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True).returncode == 0
        )

    with serve_in_thread(tmp_path / "data") as server:
        port = int(server.base_url.rsplit(":", 1)[1])
        assert healthy(port)
        assert not healthy(free_port())  # a check of the wrong port would fail
