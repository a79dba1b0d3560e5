"""What the subscription and the publisher share: the backoff between attempts, opening a
WebSocket with the client's credentials, and telling how a connection ended."""

from __future__ import annotations

import json
import random
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from eddy.client.errors import (
    PERMANENT_CLOSE_CODES,
    ClientError,
    ConnectionLost,
    RateLimited,
    Unavailable,
    server_error,
)

# A close without a close frame (the network): RFC 6455's "abnormal closure".
CLOSE_ABNORMAL = 1006
CLOSE_RATE_LIMITED = 4429


class Backoff:
    """Full-jitter exponential backoff: a random delay in [0, min(most, first * 2^attempt)).
    Spreading reconnects over the whole window keeps a herd of clients that lost the server at
    once from coming back at once."""

    def __init__(self, first: float = 0.25, most: float = 30.0) -> None:
        self.first = first
        self.most = most
        self.attempts = 0

    def reset(self) -> None:
        self.attempts = 0

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.most, self.first * 2 ** min(self.attempts, 30)))
        self.attempts += 1
        return delay


def websocket_url(base_url: str, topic: str, endpoint: str, params: dict[str, str]) -> str:
    """ws(s)://host/.../v1/topics/{topic}/{endpoint}?params for an http(s):// or ws(s):// base."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = f"{parts.path.rstrip('/')}/v1/topics/{quote(topic, safe='')}/{endpoint}"
    return urlunsplit((scheme, parts.netloc, path, urlencode(params), ""))


def unreachable(url: str, exc: BaseException) -> ConnectionLost:
    """ConnectionLost saying why `url` could not be reached (a refused connection plainly)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return ConnectionLost(
                "disconnected",
                f"cannot connect to {url}: connection refused (is it running? see EDDY_URL)",
            )
        cause = cause.__cause__ or cause.__context__
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, OSError | httpx.ConnectError):
        return ConnectionLost("disconnected", f"cannot connect to {url}: {reason}")
    return ConnectionLost("disconnected", f"{url}: {reason}")


async def open_websocket(
    base_url: str,
    url: str,
    headers: dict[str, str],
    open_timeout: float,
) -> ClientConnection:
    """A WebSocket to `url`; raises the server's ClientError for a refused handshake (401,
    404, ...) and ConnectionLost when the server cannot be reached."""
    try:
        return await connect(
            url,
            additional_headers=headers,
            open_timeout=open_timeout,
            max_size=None,  # the server bounds its frames (max.message.bytes)
            ping_interval=20,
            ping_timeout=20,
        )
    except InvalidStatus as exc:
        response = exc.response
        body: Any = None
        try:
            body = json.loads(response.body or b"")
        except ValueError:
            body = None
        raise server_error(
            body,
            status=response.status_code,
            request_id=response.headers.get("x-request-id"),
            fallback=f"WebSocket refused with HTTP {response.status_code}",
        ) from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise unreachable(base_url, exc) from None


def close_error(ws: ClientConnection, last_error: dict[str, Any] | None) -> ClientError:
    """Why a connection ended: the server's error frame that came before a 44xx close, or the
    close itself (`permanent` says whether reconnecting can help)."""
    code = ws.close_code if ws.close_code is not None else CLOSE_ABNORMAL
    reason = ws.close_reason or ""
    if code in PERMANENT_CLOSE_CODES:
        if last_error is not None:
            return server_error(last_error, close_code=code)
        return server_error(None, close_code=code, fallback=reason or f"closed with {code}")
    if code == CLOSE_ABNORMAL:
        return ConnectionLost("disconnected", "the connection was lost", close_code=code)
    message = f"closed {code}{f' ({reason})' if reason else ''}"
    if code == CLOSE_RATE_LIMITED:
        return RateLimited("rate_limited", message, close_code=code)
    return Unavailable(f"close_{code}", message, close_code=code)


def dumps(value: Any) -> str:
    """Compact JSON (big integers stay exact, unlike float-based encoders)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
