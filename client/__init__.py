"""Eddy's Python client: async first (`AsyncClient`), with a blocking wrapper (`Client`).

    import asyncio
    from eddy.client import AsyncClient

    async def main() -> None:
        async with AsyncClient("http://127.0.0.1:8080") as eddy:
            async for record in eddy.subscribe("prices", keys=["AAPL"]):
                print(record.offset, record.value)

    asyncio.run(main())

Subscriptions reconnect (full-jitter backoff) and resume exactly by offset; group members
commit what they processed; publishers are idempotent with an ack future per record; the REST
API (topics, produce, fetch, groups) is there too. Every failure is a `ClientError` with the
server's code, message and details.
"""

from eddy.client.connection import Backoff
from eddy.client.errors import (
    PERMANENT_CLOSE_CODES,
    ClientError,
    Closed,
    Conflict,
    ConnectionLost,
    Forbidden,
    NotFound,
    OffsetOutOfRange,
    OutOfOrderSequence,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
)
from eddy.client.publisher import Publisher
from eddy.client.records import Ack, FetchResult, Record
from eddy.client.rest import DEFAULT_URL, AsyncClient
from eddy.client.subscription import Subscription
from eddy.client.sync import Client, SyncPublisher, SyncSubscription

__all__ = [
    "DEFAULT_URL",
    "PERMANENT_CLOSE_CODES",
    "Ack",
    "AsyncClient",
    "Backoff",
    "Client",
    "ClientError",
    "Closed",
    "Conflict",
    "ConnectionLost",
    "FetchResult",
    "Forbidden",
    "NotFound",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "Publisher",
    "RateLimited",
    "Record",
    "RequestRejected",
    "Subscription",
    "SyncPublisher",
    "SyncSubscription",
    "Unauthorized",
    "Unavailable",
]
