"""HEAD on every GET route (RFC 9110 9.3.2): the GET's status and headers, without its body.

FastAPI routes answer only the methods they declare, so a HEAD got 405. This pure ASGI layer
routes a HEAD as a GET (a copy of the scope: uvicorn, which holds the original, still knows it
is a HEAD and sends no body bytes) and ends the response right after its start, so a GET that
streams (Server-Sent Events, a long-polling fetch once it answers) is not left running for a
client that wanted the headers only: the app's later body messages are dropped and its next
`receive()` says the client disconnected. The headers are the GET's own (Content-Length and
Content-Encoding included), as a HEAD's should be.

HEAD is not listed in the OpenAPI document: it is implied by every GET (the description says
so), and listing it would double every read operation.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HeadAsGet:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        inner = {**scope, "method": "GET"}
        started = False

        async def send_head(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            # Anything else (the body) is not sent for a HEAD.

        try:
            await self.app(inner, receive, send_head)
        finally:
            if "route" in inner:  # for the request metrics, which label by route
                scope["route"] = inner["route"]
