"""Property-based fuzzing of the REST API with schemathesis, against openapi/openapi.json.

Every operation of the checked-in OpenAPI document gets generated requests, valid ones and
invalid ones (schemathesis' positive and negative modes), sent to a real server. Checks:
no 5xx (`not_a_server_error`), and every response is documented: its status code, its content
type, its headers, its body's schema and, for an error, its code (one of the examples declared
for that status); a method the path does not serve gets 405 with `Allow`.

Random topic and group names rarely name something that exists, so generated path parameters
are sometimes swapped for a topic (3 partitions, with records) and a group (with committed
offsets) that do: that reaches the 200 paths of fetch, describe, patch, commit and reset.

Bounded: a fixed number of examples per operation, derandomized (the same requests on every
run, so no flakes), long-polls cut to 100 ms, created topics deleted as the run goes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.conftest import REPO, RunningServer, serve_in_thread

MAX_EXAMPLES = 30  # per operation and generation phase
MAX_DATA_DIR_BYTES = 64 * 1024 * 1024
KNOWN_TOPIC = "fuzzed"
KNOWN_PARTITIONS = 3
KNOWN_GROUP = "fuzzers"

# Hypothesis' caches go to the temp dir, not to .hypothesis/ in the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "eddy-schema-fuzz-hypothesis")
schema = schemathesis.openapi.from_path(REPO / "openapi" / "openapi.json")
schema.config.generation.update(max_examples=MAX_EXAMPLES, deterministic=True)

SPEC = schema.raw_schema


def documented_error_code(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """An error's code is one the operation declares for that status (its examples)."""
    if response.status_code < 400:
        return None
    operation = SPEC["paths"][case.path].get(case.method.lower())
    if operation is None:
        return None  # an undeclared method (unsupported_method checks those)
    declared = operation["responses"]
    if str(response.status_code) not in declared:
        return None  # status_code_conformance reports it
    examples = declared[str(response.status_code)]["content"]["application/json"]["examples"]
    codes = {example["value"]["error"]["code"] for example in examples.values()}
    code = response.json()["error"]["code"]
    assert code in codes, f"{case.method} {case.path}: {response.status_code} {code} not in {codes}"
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    documented_error_code,
    unsupported_method,
]


@schema.hook
def flatmap_path_parameters(
    context: schemathesis.HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    """As generated, or naming the known topic / group (and one of its partitions)."""
    if not path_parameters:
        return st.just(path_parameters)
    known: dict[str, Any] = {}
    if "topic" in path_parameters:
        known["topic"] = KNOWN_TOPIC
    if "group" in path_parameters:
        known["group"] = KNOWN_GROUP
    if not known:
        return st.just(path_parameters)
    if "partition" in path_parameters:
        return st.one_of(
            st.just(path_parameters),
            st.integers(0, KNOWN_PARTITIONS).map(
                lambda p: {**path_parameters, **known, "partition": p}
            ),
        )
    return st.sampled_from([path_parameters, {**path_parameters, **known}])


def reset_known_resources(c: httpx.Client) -> None:
    """(Re)create the known topic with records in every partition, and the known group."""
    c.delete(f"/v1/topics/{KNOWN_TOPIC}")
    created = c.post("/v1/topics", json={"name": KNOWN_TOPIC, "partitions": KNOWN_PARTITIONS})
    assert created.status_code == 201, created.text
    records = [{"key": f"k{i}", "value": {"i": i}, "partition": i % 3} for i in range(30)]
    produced = c.post(f"/v1/topics/{KNOWN_TOPIC}/records", json={"records": records})
    assert produced.status_code == 200, produced.text
    committed = c.post(
        f"/v1/groups/{KNOWN_GROUP}/offsets",
        json={"topic": KNOWN_TOPIC, "offsets": {"0": 3, "1": 5}},
    )
    assert committed.status_code == 200, committed.text


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    data = tmp_path_factory.mktemp("schema-fuzz") / "data"
    with serve_in_thread(data) as running:
        with running.client() as c:
            reset_known_resources(c)
        yield running
        with running.client() as c:
            metrics = c.get("/metrics").text
    # Belt and braces: no request of the whole run got a 5xx.
    assert [
        line
        for line in metrics.splitlines()
        if line.startswith("eddy_http_request_duration") and 'status="5' in line
    ] == []
    size = sum(f.stat().st_size for f in data.rglob("*") if f.is_file())
    assert size < MAX_DATA_DIR_BYTES, f"the fuzzing left {size} bytes in {data}"


@schema.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(
    case: schemathesis.Case[Any], fuzz_server: RunningServer
) -> None:
    query: Any = case.query
    if isinstance(query, dict) and isinstance(query.get("timeout_ms"), int):
        # A long-poll on an existing partition may wait up to 60 s; waiting itself is tested in
        # test_rest.py. Here it only has to answer as documented.
        query["timeout_ms"] = min(query["timeout_ms"], 100)
    if case.path == EVENTS:
        check_event_stream(case, fuzz_server)
        return
    response = case.call(base_url=fuzz_server.base_url, timeout=20)
    try:
        case.validate_response(
            response, checks=CHECKS, transport_kwargs={"base_url": fuzz_server.base_url}
        )
    finally:
        with fuzz_server.client() as c:
            cleanup(c, case, response.status_code)


EVENTS = "/v1/topics/{topic}/events"


def check_event_stream(case: schemathesis.Case[Any], fuzz_server: RunningServer) -> None:
    """The SSE subscription: a 200 is an endless stream, so it is opened, checked to be an event
    stream that starts with `subscribed`, and closed (test_sse.py tests the stream itself);
    any other answer is validated like every operation's."""
    kwargs = case.as_transport_kwargs(base_url=fuzz_server.base_url)
    with requests.request(**kwargs, stream=True, timeout=20) as raw:
        if raw.status_code == 200:
            assert raw.headers["content-type"].startswith("text/event-stream")
            head = b""
            for chunk in raw.iter_content(chunk_size=None):
                head += chunk
                if b"\n\n" in head:
                    break
            assert b"event: subscribed\n" in head.split(b"\n\n")[0], head
            topic = (case.path_parameters or {}).get("topic")
            if topic != KNOWN_TOPIC:  # auto-created by the subscription: do not keep it
                with fuzz_server.client() as c:
                    c.delete(f"/v1/topics/{topic}")
            return
        response = schemathesis.Response.from_requests(raw, verify=True)
    case.validate_response(
        response, checks=CHECKS, transport_kwargs={"base_url": fuzz_server.base_url}
    )


def cleanup(c: httpx.Client, case: schemathesis.Case[Any], status: int) -> None:
    """Keep the data dir small and the known resources as they were."""
    path_parameters: Any = case.path_parameters or {}
    if case.method == "POST" and case.path == "/v1/topics" and status == 201:
        body: Any = case.body
        c.delete(f"/v1/topics/{body['name']}")  # up to 1,024 partitions each: do not keep them
    known = (path_parameters.get("topic"), path_parameters.get("group"))
    if case.method in ("PATCH", "DELETE") and status < 300 and known != (None, None):
        reset_known_resources(c)  # it was changed or deleted
