"""`AsyncClient`: one server, its credentials and settings; the REST API (topics, produce,
fetch, groups) over httpx, and the WebSocket subscriptions and publishers it makes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection

from eddy.client.connection import dumps, open_websocket, unreachable, websocket_url
from eddy.client.errors import ClientError, server_error
from eddy.client.publisher import Publisher
from eddy.client.records import Ack, FetchResult, Record
from eddy.client.subscription import Subscription

DEFAULT_URL = "http://127.0.0.1:8080"

Start = Literal["earliest", "latest"]


class AsyncClient:
    """An Eddy server at `url` (http(s):// or ws(s)://). `token` (API key or JWT) is sent as
    `Authorization: Bearer`. Reconnects wait a full-jitter backoff between `min_delay` and
    `max_delay` seconds; a WebSocket that does not open within `open_timeout` is retried."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        min_delay: float = 0.25,
        max_delay: float = 30.0,
        open_timeout: float = 10.0,
    ) -> None:
        base = url.rstrip("/")
        for ws, http in (("wss://", "https://"), ("ws://", "http://")):
            if base.startswith(ws):
                base = http + base[len(ws) :]
        self.url = base
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.open_timeout = open_timeout
        self._http = httpx.AsyncClient(base_url=base, headers=self.headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- the WebSocket side ------------------------------------------------------------------
    def subscribe(
        self,
        topic: str,
        *,
        start: Start | None = None,
        offsets: Mapping[int, int] | None = None,
        partitions: Iterable[int] | None = None,
        keys: Iterable[str] | None = None,
        since: int | None = None,
        on_slow: Literal["close", "conflate"] | None = None,
        max_rate: float | None = None,
        group: str | None = None,
        auto_commit: bool = False,
        retry_first_connect: bool = True,
        max_buffer: int = 1000,
    ) -> Subscription:
        """Follow a topic (see `Subscription`). `start` is the API's `from` (where partitions
        without another position start); `offsets` the next offset per partition to start at;
        `since` a time in ms. With `group`, a member of that consumer group. The WebSocket
        opens when iteration starts (or on `async with`)."""
        params: dict[str, str] = {}
        if start is not None:
            params["from"] = start
        if partitions is not None:
            params["partitions"] = ",".join(str(p) for p in partitions)
        if keys is not None:
            params["keys"] = ",".join(keys)
        if since is not None:
            params["since"] = str(int(since))
        if on_slow is not None:
            params["on_slow"] = on_slow
        if max_rate is not None:
            params["max_rate"] = f"{max_rate:g}"
        if group is not None:
            params["group"] = group
            if auto_commit:
                params["auto_commit"] = "true"
        return Subscription(
            self,
            topic,
            params,
            dict(offsets or {}),
            group,
            retry_first_connect=retry_first_connect,
            max_buffer=max_buffer,
        )

    def publisher(
        self,
        topic: str,
        *,
        producer_id: str | None = None,
        idempotent: bool = True,
        sequence: int = 0,
        max_in_flight: int = 1000,
    ) -> Publisher:
        """A publishing WebSocket (see `Publisher`). Idempotent by default, with a random
        producer id unless `producer_id` is given; `sequence` continues an id's numbering."""
        return Publisher(
            self,
            topic,
            producer_id=producer_id,
            idempotent=idempotent,
            sequence=sequence,
            max_in_flight=max_in_flight,
        )

    async def _websocket(
        self, topic: str, endpoint: str, params: dict[str, str]
    ) -> ClientConnection:
        url = websocket_url(self.url, topic, endpoint, params)
        return await open_websocket(self.url, url, self.headers, self.open_timeout)

    # --- REST ---------------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        """The response's JSON (None for an empty answer); raises ClientError."""
        content = None if body is None else dumps(body).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = await self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            raise unreachable(self.url, exc) from None
        if response.is_error:
            raise _response_error(response)
        if not response.content:
            return None
        return json.loads(response.content)  # the json module keeps big integers exact

    async def create_topic(
        self, name: str, partitions: int | None = None, config: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if partitions is not None:
            body["partitions"] = partitions
        if config:
            body["config"] = dict(config)
        result: dict[str, Any] = await self.request("POST", "/v1/topics", body)
        return result

    async def list_topics(self) -> list[dict[str, Any]]:
        topics: list[dict[str, Any]] = (await self.request("GET", "/v1/topics"))["topics"]
        return topics

    async def describe_topic(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/v1/topics/{_seg(name)}")
        return result

    async def alter_topic(
        self, name: str, partitions: int | None = None, config: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if partitions is not None:
            body["partitions"] = partitions
        if config:
            body["config"] = dict(config)
        result: dict[str, Any] = await self.request("PATCH", f"/v1/topics/{_seg(name)}", body)
        return result

    async def delete_topic(self, name: str) -> None:
        await self.request("DELETE", f"/v1/topics/{_seg(name)}")

    async def produce(
        self,
        topic: str,
        records: Iterable[Mapping[str, Any]],
        *,
        producer_id: str | None = None,
        sequence: int | None = None,
    ) -> list[Ack]:
        """Append a batch atomically (all or none), after it is on disk: one Ack per record.
        With `producer_id` and `sequence` the request is idempotent: retrying it after a
        timeout appends nothing twice and returns the original acks."""
        body: dict[str, Any] = {"records": [dict(r) for r in records]}
        if producer_id is not None:
            body["producer"] = {"id": producer_id, "sequence": sequence or 0}
        answer = await self.request("POST", f"/v1/topics/{_seg(topic)}/records", body)
        return [Ack.from_json(o) for o in answer["offsets"]]

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int | Start = "earliest",
        *,
        limit: int | None = None,
        max_bytes: int | None = None,
        timeout_ms: int | None = None,
    ) -> FetchResult:
        """Records of one partition from `offset` (timeout_ms > 0 long-polls for the first)."""
        given = {"offset": offset, "limit": limit, "max_bytes": max_bytes, "timeout_ms": timeout_ms}
        params = {k: v for k, v in given.items() if v is not None}
        path = f"/v1/topics/{_seg(topic)}/partitions/{partition}/records"
        page = await self.request("GET", path, params=params)
        return FetchResult(
            [Record.from_json(r) for r in page["records"]],
            page["next_offset"],
            page["log_start_offset"],
            page["high_watermark"],
        )

    async def offset_for_time(self, topic: str, partition: int, timestamp: int) -> int | None:
        """The first offset whose timestamp is >= `timestamp` (ms), or None."""
        path = f"/v1/topics/{_seg(topic)}/partitions/{partition}/offsets"
        answer = await self.request("GET", path, params={"timestamp": timestamp})
        offset: int | None = answer["offset"]
        return offset

    async def list_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = (await self.request("GET", "/v1/groups"))["groups"]
        return groups

    async def describe_group(self, group: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", f"/v1/groups/{_seg(group)}")
        return result

    async def commit_group(
        self, group: str, topic: str, offsets: Mapping[int, int]
    ) -> dict[str, Any]:
        """Commit a group's next offsets per partition from REST (no membership needed)."""
        body = {"topic": topic, "offsets": {str(p): o for p, o in offsets.items()}}
        result: dict[str, Any] = await self.request(
            "POST", f"/v1/groups/{_seg(group)}/offsets", body
        )
        return result

    async def reset_group(self, group: str, topic: str, to: Start | int) -> dict[str, Any]:
        """Move a memberless group's offsets to earliest, latest or a time (ms)."""
        target: Any = {"timestamp": to} if isinstance(to, int) else to
        body = {"topic": topic, "to": target}
        result: dict[str, Any] = await self.request("POST", f"/v1/groups/{_seg(group)}/reset", body)
        return result

    async def delete_group(self, group: str) -> None:
        await self.request("DELETE", f"/v1/groups/{_seg(group)}")


def _seg(name: str) -> str:
    return quote(name, safe="")


def _response_error(response: httpx.Response) -> ClientError:
    try:
        body: Any = json.loads(response.content)
    except ValueError:
        body = None
    text = response.text.strip()[:200] or response.reason_phrase
    return server_error(
        body,
        status=response.status_code,
        request_id=response.headers.get("x-request-id"),
        fallback=f"HTTP {response.status_code}: {text}",
    )
