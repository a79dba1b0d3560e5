"""Property-based fuzzing of the REST API with schemathesis, against openapi/openapi.json.

Every operation of the checked-in OpenAPI document gets generated requests, valid ones and
invalid ones (schemathesis' positive and negative modes), sent to a real server. Checks:
no 5xx (`not_a_server_error`), and every response is documented: its status code, its content
type, its headers and its body's schema. Bounded: a fixed number of examples per operation,
derandomized (the same requests on every run, so no flakes), short long-polls.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import REPO, RunningServer, serve_in_thread

MAX_EXAMPLES = 30  # per operation and generation phase
MAX_DATA_DIR_BYTES = 64 * 1024 * 1024

schema = schemathesis.openapi.from_path(REPO / "openapi" / "openapi.json")
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("schema-fuzz") / "data"
    with serve_in_thread(data) as running:
        yield running
        with httpx.Client(base_url=running.base_url, timeout=10) as c:
            metrics = c.get("/metrics").text
    # Belt and braces: no request of the whole run got a 5xx.
    assert [
        line
        for line in metrics.splitlines()
        if line.startswith("eddy_http_request_duration") and 'status="5' in line
    ] == []
    # Created topics are deleted as the run goes; what produce auto-created stays small.
    size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    assert size < MAX_DATA_DIR_BYTES, f"the fuzzing left {size} bytes in {data}"


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case, fuzz_server: RunningServer
) -> None:
    query: Any = case.query
    if isinstance(query, dict) and isinstance(query.get("timeout_ms"), int):
        # Bounded run: a long-poll on an existing partition would wait up to 60 s. Long-poll
        # waiting itself is tested in test_rest.py.
        query["timeout_ms"] = min(query["timeout_ms"], 100)
    response = case.call(base_url=fuzz_server.base_url, timeout=20)
    try:
        case.validate_response(
            response, checks=CHECKS, transport_kwargs={"base_url": fuzz_server.base_url}
        )
    finally:
        if case.method == "POST" and case.path == "/v1/topics" and response.status_code == 201:
            # Topics can have up to 1,024 partitions: do not let them pile up on disk.
            name = response.json()["name"]
            httpx.delete(f"{fuzz_server.base_url}/v1/topics/{name}", timeout=10)
