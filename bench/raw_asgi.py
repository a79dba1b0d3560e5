"""Baseline for single-record produce: the least an ASGI app can do per request.

Served by the same uvicorn as Eddy:
`uvicorn bench.raw_asgi:app --log-level warning --no-access-log`.
It reads the whole body and answers a small JSON shaped like Eddy's produce response.
"""

from __future__ import annotations

import time
from typing import Any

_HEADERS = [(b"content-type", b"application/json")]
_offset = 0


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _offset
    if scope["type"] != "http":  # lifespan: accept start-up and shutdown
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:  # read the whole body, as a real handler would
        message = await receive()
        more = message.get("more_body", False)
    body = b'{"offsets":[{"partition":0,"offset":%d,"timestamp":%d}]}' % (
        _offset,
        time.time_ns() // 1_000_000,
    )
    _offset += 1
    headers = [*_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
