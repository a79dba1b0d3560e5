"""HTTP content codings: compressed responses and compressed request bodies.

Responses: Starlette's GZipMiddleware, for GET responses to clients that send
`Accept-Encoding: gzip`, with bodies of at least `GZIP_MINIMUM_SIZE` bytes (a fetch of 1,000
records shrinks several times). It never touches `text/event-stream` (its default exclusions: an
SSE stream is passed through unbuffered) or WebSockets, and compresses large bodies in a worker
thread.

Requests: `RequestDecoding` decodes a body sent with `Content-Encoding: gzip` (or `deflate`) as it
is received, so every route (the lean produce route included) reads the decoded bytes. The
decoded size is bounded by the same limit as a plain body: decompression stops as soon as it
passes the limit (413 `payload_too_large`), so a small zip bomb cannot take the memory. Any other
coding of a request body is refused with 415.
"""

from __future__ import annotations

import asyncio
import zlib
from functools import partial

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eddy.app.errors import error_response
from eddy.models.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

GZIP_MINIMUM_SIZE = 1024
# zlib's default level: most of level 9's ratio on JSON records at a fraction of its CPU.
GZIP_LEVEL = 6
# zlib's window bits per coding: gzip's header and trailer, or the zlib wrapper (RFC 9110 8.4.1).
DECODERS = {"gzip": 31, "x-gzip": 31, "deflate": 15}
# Chunks up to this size are decoded on the event loop (at most a few ms even at zlib's
# maximum ratio); larger ones in a worker thread.
INLINE_DECODE_BYTES = 4096


class GzipGetResponses:
    """Starlette's GZipMiddleware for GET and HEAD: the responses worth compressing (fetch,
    listings, metrics, documents, the console) answer reads. Writes bypass it: it costs about
    10 us of CPU per request even when it compresses nothing (bench/http_encoding.py), and a
    produce answer is small (a large batch's acks are the only exception, and compressing them
    would cost the hot path more CPU than the bytes are worth on the networks producers use)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=GZIP_MINIMUM_SIZE, compresslevel=GZIP_LEVEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD") and _accepts_gzip(scope):
            await self.gzip(scope, receive, send)
        else:
            # A client that takes no gzip gets what GZipMiddleware would send it, minus a
            # `Vary: Accept-Encoding` that only a compressed answer needs (caches must not give
            # it to clients that cannot decode it; a plain answer suits everyone).
            await self.app(scope, receive, send)


def _accepts_gzip(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"accept-encoding":
            return b"gzip" in value
    return False


class BodyDecoder:
    """Incremental decoding of one request body, at most `limit` decoded bytes. Concatenated
    gzip members (RFC 1952 2.2) decode as one body."""

    def __init__(self, coding: str, limit: int) -> None:
        self._wbits = DECODERS[coding]
        self._coding = coding
        self._limit = limit
        self._decoded = 0
        self._inflater = zlib.decompressobj(self._wbits)

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes of the next chunk. Raises PayloadTooLarge past the limit and
        InvalidRequest for a corrupt body."""
        out: list[bytes] = []
        try:
            while data:
                room = self._limit - self._decoded + 1  # one byte more tells "too large"
                chunk = self._inflater.decompress(data, room)
                self._decoded += len(chunk)
                if self._decoded > self._limit:
                    raise PayloadTooLarge(
                        f"the decompressed request body exceeds {self._limit} bytes",
                        {"limit": self._limit},
                    )
                out.append(chunk)
                if self._inflater.unconsumed_tail:
                    data = self._inflater.unconsumed_tail
                elif self._inflater.eof and self._inflater.unused_data:
                    data = self._inflater.unused_data  # the next gzip member
                    self._inflater = zlib.decompressobj(self._wbits)
                else:
                    data = b""
        except zlib.error as exc:
            raise InvalidRequest(f"the request body is not valid {self._coding}: {exc}") from None
        return b"".join(out)

    def finish(self) -> None:
        """The body has ended: it must have ended with a complete stream."""
        if not self._inflater.eof:
            raise InvalidRequest(f"the {self._coding} request body is truncated")


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


class RequestDecoding:
    """Decodes `Content-Encoding` of request bodies (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        encoding = None
        for name, value in scope["headers"]:
            if name == b"content-encoding":
                encoding = value
                break
        if encoding is None or not _has_body(scope["headers"]):
            await self.app(scope, receive, send)
            return
        codings = [c.strip() for c in encoding.decode("latin-1").lower().split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if not codings:
            await self.app(scope, receive, send)
            return
        if len(codings) > 1 or codings[0] not in DECODERS:
            error = UnsupportedMediaType(
                f"unsupported Content-Encoding '{encoding.decode('latin-1')[:100]}'",
                {"supported": ["gzip", "deflate", "identity"]},
            )
            await error_response(error)(scope, receive, send)
            return
        # The app sees a plain body: no coding, and no length (the decoded length is unknown).
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in (b"content-encoding", b"content-length")
        ]
        decoder = BodyDecoder(codings[0], self.max_body_bytes)

        async def decoded_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request":
                return message
            body: bytes = message.get("body", b"")
            if len(body) > INLINE_DECODE_BYTES:
                decoded = await asyncio.to_thread(partial(decoder.feed, body))
            else:
                decoded = decoder.feed(body)
            more_body = message.get("more_body", False)
            if not more_body:
                decoder.finish()
            return {"type": "http.request", "body": decoded, "more_body": more_body}

        await self.app({**scope, "headers": headers}, decoded_receive, send)
