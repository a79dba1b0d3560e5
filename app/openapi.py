"""The OpenAPI document: stable operation ids, the produce body's hand-declared schemas, the
server entry and the bearer security scheme.

The error responses are declared per route (routers/responses.py); FastAPI's default 422
(`HTTPValidationError`, a shape the server never sends) must not appear: every operation with
parameters or a body declares its own 422, and a test checks that none slipped through."""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from eddy.models.records import MAX_INT64, ProduceBatch, RecordIn

# The server's address, as variables: tools that need an absolute URL get a correct one
# (Postman's converter turns these into collection variables `scheme` and `host`; Swagger UI
# shows them as fields), and "/" (the server that served the document) is the second choice,
# for a server behind a proxy or on another address.
SERVERS: list[dict[str, Any]] = [
    {
        "url": "{scheme}://{host}",
        "description": "An Eddy server (`eddy serve` listens on 127.0.0.1:8080 by default)",
        "variables": {
            "scheme": {"default": "http", "enum": ["http", "https"]},
            "host": {"default": "127.0.0.1:8080", "description": "host:port of the server"},
        },
    },
    {"url": "/", "description": "The server that serves this document"},
]
TAGS = [
    {"name": "topics", "description": "Create, list, describe, change and delete topics"},
    {"name": "records", "description": "Produce, fetch, and find offsets by timestamp"},
    {"name": "consumer groups", "description": "Committed offsets and members of groups"},
    {"name": "operations", "description": "Health, readiness and Prometheus metrics"},
    {
        "name": "subscribe",
        "description": "Server-Sent Events (the WebSocket subscription: the AsyncAPI document)",
    },
]
# Credentials or none (anonymous access, or access control off).
OPTIONAL_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {}]


def operation_id(route: APIRoute) -> str:
    """Operation ids are the endpoint function names: stable and readable in generated clients."""
    return route.name


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        servers=SERVERS,
    )
    _, extra = models_json_schema(
        [(RecordIn, "validation"), (ProduceBatch, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).update(extra["$defs"])
    used = {tag for ops in schema["paths"].values() for op in ops.values() for tag in op["tags"]}
    known = {tag["name"] for tag in TAGS}
    schema["tags"] = [t for t in TAGS if t["name"] in used] + [
        {"name": tag} for tag in sorted(used - known)
    ]
    _exact_bounds(schema)
    for operations in schema["paths"].values():
        for operation in operations.values():
            # FastAPI declares routers/deps.py's bearer scheme as required where a route
            # identifies its caller; it is optional there (anonymous access), and `[]` says an
            # operation takes no credentials at all (health, metrics).
            operation["security"] = OPTIONAL_BEARER if operation.get("security") else []
    app.openapi_schema = schema
    return schema


_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def _exact_bounds(node: Any) -> None:
    """Integer bounds as integers. FastAPI's OpenAPI model types them as floats, which turns
    1024 into 1024.0 and 2**63 - 1 (the int64 bounds of offsets and timestamps) into 2**63, a
    value the server refuses. Every bound Eddy declares is an integer, and the int64 ones are
    the only ones a float cannot hold."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _BOUNDS and isinstance(value, float) and value.is_integer():
                if abs(value) == float(MAX_INT64):
                    node[key] = MAX_INT64 if value > 0 else -MAX_INT64
                else:
                    node[key] = int(value)
            else:
                _exact_bounds(value)
    elif isinstance(node, list):
        for item in node:
            _exact_bounds(item)


def install_asyncapi(app: FastAPI) -> None:
    """`GET /asyncapi.yaml`, the AsyncAPI document of the WebSocket and SSE protocol (package
    data, so an installed wheel serves it too), and `GET /asyncapi`, the page in static/ that
    renders it offline (linked from /docs)."""
    document = resources.files("eddy.openapi").joinpath("asyncapi.yaml").read_bytes()

    @app.get("/asyncapi.yaml", include_in_schema=False)
    async def asyncapi_document() -> Response:
        return Response(document, media_type="application/yaml")  # RFC 9512

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi_page() -> RedirectResponse:
        return RedirectResponse("/static/asyncapi.html")
