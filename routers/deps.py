"""Dependencies: the broker the lifespan created, typed for the endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from broker import Broker


async def get_broker(conn: HTTPConnection) -> Broker:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, which would cost
    # a thread hand-off on every request for a dictionary lookup.
    broker: Broker = conn.state.broker
    return broker


BrokerDep = Annotated[Broker, Depends(get_broker)]
