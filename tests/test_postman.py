"""Postman/newman against a live server: the hand-kept collection's assertions (topics CRUD,
produce single/batch/raw, fetch, offsets by timestamp, groups, error cases), and the collection
Postman's converter makes from openapi/openapi.json (its URLs must reach the server)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RunningServer

COLLECTION = REPO / "tests" / "postman" / "eddy.postman_collection.json"
NODE_BIN = REPO / "node_modules" / ".bin"


def node_tool(name: str) -> str:
    tool = NODE_BIN / name
    if not tool.exists():
        pytest.fail(f"{tool} is missing: run `bash .ci/install-node-tools.sh` (CI does)")
    return str(tool)


def newman(collection: Path, server: RunningServer, report: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            node_tool("newman"),
            "run",
            str(collection),
            "--env-var",
            f"host={server.base_url.removeprefix('http://')}",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--color",
            "off",
            "--timeout-request",
            "30000",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    run: dict[str, Any] = json.loads(report.read_text())["run"]
    run["exit_code"] = result.returncode
    run["output"] = result.stdout[-8000:] + result.stderr[-2000:]
    return run


def test_the_postman_collection_passes_against_a_live_server(
    server: RunningServer, tmp_path: Path
) -> None:
    run = newman(COLLECTION, server, tmp_path / "report.json")
    assert run["exit_code"] == 0 and run["failures"] == [], run["output"]
    stats = run["stats"]
    assert stats["requests"]["failed"] == 0
    assert stats["assertions"]["total"] >= 150 and stats["assertions"]["failed"] == 0
    statuses = {e["response"]["code"] for e in run["executions"]}
    assert {200, 201, 204, 404, 405, 409, 413, 415, 416, 422} <= statuses


def test_the_collection_converted_from_the_openapi_document_reaches_the_server(
    server: RunningServer, tmp_path: Path
) -> None:
    converted = tmp_path / "converted.json"
    subprocess.run(
        [
            node_tool("openapi2postmanv2"),
            "-s",
            "openapi/openapi.json",
            "-o",
            str(converted),
            "-p",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=120,
    )
    variables = {v["key"]: v["value"] for v in json.loads(converted.read_text())["variable"]}
    assert variables["baseUrl"] == "{{scheme}}://{{host}}"  # a whole URL, not "/"
    assert (variables["scheme"], variables["host"]) == ("http", "127.0.0.1:8080")
    run = newman(converted, server, tmp_path / "report.json")
    executions = run["executions"]
    assert len(executions) == sum(len(ops) for ops in _spec_paths().values())
    for execution in executions:
        url = execution["request"]["url"]
        assert url["host"] == ["127", "0", "0", "1"], url  # e.g. not http:////v1/...
        assert "response" in execution, execution.get("requestError")
        assert execution["response"]["code"] < 500, url


def _spec_paths() -> dict[str, Any]:
    paths: dict[str, Any] = json.loads((REPO / "openapi" / "openapi.json").read_text())["paths"]
    return paths
