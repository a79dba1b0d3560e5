"""The checked-in API documents match what the server serves."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from tests.conftest import REPO


def test_checked_in_openapi_equals_served_spec(client: httpx.Client) -> None:
    served = client.get("/openapi.json").json()
    checked_in = json.loads((REPO / "openapi" / "openapi.json").read_text())
    assert served == checked_in, "run `eddy export-openapi` and commit openapi/openapi.json"


def test_export_command_writes_the_same_spec(tmp_path: object, client: httpx.Client) -> None:
    out = f"{tmp_path}/spec.json"
    subprocess.run(
        [sys.executable, "-m", "eddy", "export-openapi", "--out", out],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    with open(out) as f:
        assert json.load(f) == client.get("/openapi.json").json()


def test_every_operation_documents_its_errors_with_the_error_shape(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("operationId"), (method, path)
            assert operation.get("summary") or operation.get("description"), (method, path)
    produce = spec["paths"]["/v1/topics/{topic}/records"]["post"]
    assert set(produce["requestBody"]["content"]) == {
        "application/json",
        "text/plain",
        "application/octet-stream",
    }
    assert "RecordIn" in spec["components"]["schemas"]
    assert "ProduceBatch" in spec["components"]["schemas"]


def test_asyncapi_describes_both_websocket_endpoints() -> None:
    text = (REPO / "openapi" / "asyncapi.yaml").read_text()
    for needle in (
        "/v1/topics/{topic}/ws",
        "/v1/topics/{topic}/publish",
        "subscribed",
        "4408",
        "4404",
        "4400",
        "ack",
    ):
        assert needle in text
