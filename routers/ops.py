"""Health, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from eddy.routers.deps import BrokerDep
from eddy.routers.responses import UNAVAILABLE, errors

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses=errors(UNAVAILABLE))
async def readyz(broker: BrokerDep) -> Health:
    """Storage is open and writable, and the background tasks run (503 names what is not)."""
    await broker.check_ready()
    return Health(status="ready")


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(broker: BrokerDep) -> Response:
    """Prometheus metrics."""
    await broker.refresh_disk_metrics()
    return Response(broker.metrics_exposition(), media_type=CONTENT_TYPE_LATEST)
