"""The OpenAPI document: stable operation ids, plus the produce body's hand-declared schemas."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic.json_schema import models_json_schema

from models.records import ProduceBatch, RecordIn


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
        tags=app.openapi_tags,
    )
    _, extra = models_json_schema(
        [(RecordIn, "validation"), (ProduceBatch, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(extra["$defs"])
    app.openapi_schema = schema
    return schema
