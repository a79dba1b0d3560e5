"""Dependencies: the broker the lifespan created, typed for the endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from broker import Broker


def get_broker(conn: HTTPConnection) -> Broker:
    broker: Broker = conn.state.broker
    return broker


BrokerDep = Annotated[Broker, Depends(get_broker)]
