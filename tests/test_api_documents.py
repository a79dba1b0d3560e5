"""The API documents are exact and pass the tools integrators use: the OpenAPI document's
error declarations against the error classes and a live server (with access control and rate
limits on), Redocly's linter, the AsyncAPI parser, and the AsyncAPI page in a real browser
with no network beyond the server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from eddy.broker.topic_rules import validate_config, validate_partition_count
from eddy.models.errors import EddyError, InvalidRequest
from tests.conftest import REPO, RunningServer, serve_in_thread

SPEC: dict[str, Any] = json.loads((REPO / "openapi" / "openapi.json").read_text())
NODE_BIN = REPO / "node_modules" / ".bin"
CHROMIUM = os.environ.get("EDDY_CHROMIUM", "/usr/bin/chromium")


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in SPEC["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def error_classes() -> dict[str, type[EddyError]]:
    found: dict[str, type[EddyError]] = {}
    pending: list[type[EddyError]] = [EddyError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls
        pending += cls.__subclasses__()
    return found


def declared_codes(operation: dict[str, Any], status: int) -> set[str]:
    response = operation["responses"].get(str(status), {})
    examples = response.get("content", {}).get("application/json", {}).get("examples", {})
    return {example["value"]["error"]["code"] for example in examples.values()}


def node_tool(name: str) -> str:
    tool = NODE_BIN / name
    if not tool.exists():
        pytest.fail(f"{tool} is missing: run `bash .ci/install-node-tools.sh` (CI does)")
    return str(tool)


# --- the document itself -------------------------------------------------------------------


def test_no_operation_declares_fastapi_s_validation_error_shape() -> None:
    text = json.dumps(SPEC)
    assert (
        "HTTPValidationError" not in text and "ValidationError" not in SPEC["components"]["schemas"]
    )
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path)


def test_every_error_example_is_a_real_error_of_its_status() -> None:
    classes = error_classes()
    for path, method, operation in operations():
        for status, response in operation["responses"].items():
            if not status.startswith(("4", "5")):
                continue
            examples = response["content"]["application/json"]["examples"]
            assert examples, (method, path, status)
            for example in examples.values():
                error = example["value"]["error"]
                assert set(error) == {"code", "message", "details"}
                assert classes[error["code"]].http_status == int(status), (method, path, error)


def test_the_contract_s_codes_are_declared_where_the_server_raises_them() -> None:
    ops = {(m, p): o for p, m, o in operations()}
    expected = {
        ("post", "/v1/topics"): {409: {"topic_exists", "topic_limit_reached"}},
        ("get", "/v1/topics/{topic}"): {404: {"topic_not_found"}},
        ("post", "/v1/topics/{topic}/records"): {
            404: {"topic_not_found", "partition_not_found"},
            409: {"out_of_order_sequence", "topic_limit_reached"},
            413: {"record_too_large", "payload_too_large"},
            415: {"unsupported_media_type"},
            429: {"rate_limited"},
            503: {"unavailable", "outcome_unknown"},
        },
        ("get", "/v1/topics/{topic}/partitions/{partition}/records"): {
            404: {"topic_not_found", "partition_not_found"},
            416: {"offset_out_of_range"},
        },
        ("get", "/v1/groups/{group}"): {404: {"group_not_found"}},
        ("post", "/v1/groups/{group}/reset"): {409: {"group_active"}},
        ("delete", "/v1/groups/{group}"): {404: {"group_not_found"}, 409: {"group_active"}},
    }
    for key, statuses in expected.items():
        for status, codes in statuses.items():
            assert declared_codes(ops[key], status) == codes, (key, status)
    for (method, path), operation in ops.items():
        if operation["security"]:
            assert declared_codes(operation, 401) == {"unauthorized"}, (method, path)
            assert operation["responses"]["401"]["headers"]["WWW-Authenticate"]["required"]
        if "parameters" in operation or "requestBody" in operation:
            assert declared_codes(operation, 422) == {"invalid_request"}, (method, path)
    produce = ops[("post", "/v1/topics/{topic}/records")]["responses"]
    assert produce["429"]["headers"]["Retry-After"]["required"] is True
    assert produce["503"]["headers"]["Retry-After"]["required"] is False  # only when busy
    offsets_example = ops[("get", "/v1/topics/{topic}/partitions/{partition}/records")][
        "responses"
    ]["416"]["content"]["application/json"]["examples"]["offset_out_of_range"]["value"]
    assert {"log_start_offset", "high_watermark"} <= set(offsets_example["error"]["details"])


def test_servers_and_security_make_absolute_urls_and_an_authorize_button() -> None:
    first = SPEC["servers"][0]
    url = first["url"].format(**{k: v["default"] for k, v in first["variables"].items()})
    assert url == "http://127.0.0.1:8080"
    assert {"url": "/", "description": "The server that serves this document"} in SPEC["servers"]
    assert SPEC["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, method, operation in operations():
        if path in ("/healthz", "/readyz", "/metrics"):
            assert operation["security"] == [], path
        else:  # credentials, or none (anonymous access / access control off)
            assert operation["security"] == [{"bearer": []}, {}], (method, path)


def test_bounds_in_the_schema_are_the_ones_the_broker_enforces() -> None:
    schemas = SPEC["components"]["schemas"]
    partitions = schemas["TopicCreate"]["properties"]["partitions"]["anyOf"][0]
    assert validate_partition_count(partitions["maximum"]) == partitions["maximum"]
    with pytest.raises(InvalidRequest):
        validate_partition_count(partitions["maximum"] + 1)
    assert schemas["TopicPatch"]["properties"]["partitions"]["anyOf"][0] == partitions
    config = schemas["TopicCreate"]["properties"]["config"]
    assert config["additionalProperties"] is False
    with pytest.raises(InvalidRequest):
        validate_config({"unknown.key": 1})
    for key, rule in config["properties"].items():
        if rule["type"] == "integer":
            low, high = rule["minimum"], rule["maximum"]
            assert validate_config({key: low, **{}}) == {key: low}
            assert validate_config({key: high}) == {key: high}
            for outside in (low - 1, high + 1):
                with pytest.raises(InvalidRequest):
                    validate_config({key: outside})
        else:
            for value in rule["enum"]:
                assert validate_config({key: value}) == {key: value}
            with pytest.raises(InvalidRequest):
                validate_config({key: "sometimes"})


def test_redocly_lints_the_openapi_document_clean() -> None:
    result = subprocess.run(
        [node_tool("redocly"), "lint", "openapi/openapi.json", "--format", "stylish"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Your API description is valid" in result.stdout + result.stderr


def test_the_asyncapi_parser_validates_the_asyncapi_document() -> None:
    result = subprocess.run(
        ["node", "tests/node/validate_asyncapi.mjs", "openapi/asyncapi.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "VALID: Eddy WebSocket and SSE API" in result.stdout
    assert "3 channels" in result.stdout


def test_the_asyncapi_document_covers_sse_and_the_delivery_options() -> None:
    text = (REPO / "openapi" / "asyncapi.yaml").read_text()
    for needle in (
        "/v1/topics/{topic}/events",
        "Last-Event-ID",
        "event: subscribed",
        "event: record",
        "event: error",
        "0:42,1:17",
        "since:",
        "on_slow:",
        "max_rate:",
        "conflated:",
        "slow_consumer",
    ):
        assert needle in text, needle


# --- against a live server --------------------------------------------------------------------

KEY = "k-reader"
AUTH_FILE = f"""
[[principals]]
name = "reader"
key_sha256 = "{hashlib.sha256(KEY.encode()).hexdigest()}"
read = ["other"]
"""


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[RunningServer]:
    auth = tmp_path / "auth.toml"
    auth.write_text(AUTH_FILE)
    with serve_in_thread(tmp_path / "data", auth_file=auth) as server:
        yield server


SAMPLE_BODIES: dict[tuple[str, str], Any] = {
    ("post", "/v1/topics"): {"name": "prices"},
    ("patch", "/v1/topics/{topic}"): {"partitions": 2},
    ("post", "/v1/topics/{topic}/records"): {"value": 1},
    ("post", "/v1/groups/{group}/offsets"): {"topic": "prices", "offsets": {"0": 0}},
    ("post", "/v1/groups/{group}/reset"): {"topic": "prices", "to": "earliest"},
}


def call(client: httpx.Client, method: str, path: str, token: str | None) -> httpx.Response:
    url = path.format(topic="prices", partition=0, group="billing")
    params = {"timestamp": 0} if path.endswith("/offsets") and "partitions" in path else None
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    body = SAMPLE_BODIES.get((method, path))
    return client.request(method, url, json=body, params=params, headers=headers)


def assert_declared(response: httpx.Response, method: str, path: str) -> None:
    operation = SPEC["paths"][path][method]
    error = response.json()["error"]
    assert error["code"] in declared_codes(operation, response.status_code), (
        method,
        path,
        response.status_code,
        error,
    )
    for name, header in (
        operation["responses"][str(response.status_code)].get("headers", {}).items()
    ):
        if header.get("required"):
            assert name in response.headers, (method, path, name)


def test_auth_and_rate_limit_errors_are_declared_as_the_server_sends_them(
    auth_server: RunningServer,
) -> None:
    seen: set[int] = set()
    with auth_server.client() as client:
        for path, method, operation in operations():
            if not operation["security"]:
                continue
            for token in ("not-a-key", KEY, None):
                response = call(client, method, path, token)
                seen.add(response.status_code)
                if response.status_code >= 400:
                    assert_declared(response, method, path)
                if token == "not-a-key":
                    assert response.status_code == 401, (method, path)
    assert {401, 403} <= seen


def test_a_rate_limited_produce_is_declared_with_its_retry_after(tmp_path: Path) -> None:
    with (
        serve_in_thread(tmp_path / "d", produce_rate_limit=0.01, produce_rate_burst=1) as server,
        server.client() as client,
    ):
        path = "/v1/topics/{topic}/records"
        assert call(client, "post", path, None).status_code == 200
        limited = call(client, "post", path, None)
        assert limited.status_code == 429
        assert_declared(limited, "post", path)
        assert int(limited.headers["Retry-After"]) >= 1


def test_the_server_serves_its_asyncapi_document(client: httpx.Client) -> None:
    served = client.get("/asyncapi.yaml")
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/yaml"
    assert served.content == (REPO / "openapi" / "asyncapi.yaml").read_bytes()
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "/asyncapi" in json.dumps(client.get("/openapi.json").json()["info"]["description"])
    page = client.get("/asyncapi", follow_redirects=True)
    assert page.status_code == 200 and "asyncapi-react/index.js" in page.text


def test_docs_link_to_the_asyncapi_page_which_renders_offline(server: RunningServer) -> None:
    from playwright.sync_api import expect, sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: run `bash .ci/install-debian-packages.sh`")
    outside: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: errors.append(str(error)))

            def only_the_server(route: Any) -> None:
                if route.request.url.startswith(server.base_url):
                    route.continue_()
                else:  # a CDN, a font, a schema fetched from asyncapi.com: not allowed
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", only_the_server)
            # Swagger UI: an Authorize button (the bearer scheme) and the link to the page.
            page.goto(server.base_url + "/docs")
            expect(page.get_by_role("button", name="Authorize")).to_be_visible(timeout=30_000)
            link = page.get_by_role("link", name="AsyncAPI document")
            expect(link).to_have_attribute("href", "/asyncapi")
            page.goto(server.base_url + "/asyncapi")
            expect(
                page.locator("#introduction").get_by_text("Eddy WebSocket and SSE")
            ).to_be_visible(timeout=30_000)
            for heading in ("SEND /v1/topics/{topic}/events", "REPLY /v1/topics/{topic}/publish"):
                expect(page.get_by_role("heading", name=heading).first).to_be_attached()
        finally:
            browser.close()
    assert outside == [] and errors == []
