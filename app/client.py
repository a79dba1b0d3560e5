"""A client of a running Eddy server, for the `eddy` command line: REST over httpx, the
subscription over a WebSocket (the `websockets` library). Every failure is an `EddyError` whose
message is what the user reads: the server's own error message, or why it could not be reached.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

DEFAULT_URL = "http://127.0.0.1:8080"
# Between commits of what a group member has printed: a bounded amount is delivered again if
# the process is killed, and the server is not asked for a commit per record.
COMMIT_INTERVAL = 1.0  # seconds
COMMIT_WAIT = 5.0  # seconds to wait for the answer to the last commit


class EddyError(Exception):
    """A request failed; str() is the message for the user."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


def dumps(value: Any) -> str:
    """JSON as the server sends it back: big integers stay exact (unlike float-based parsers)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _server_error(response: httpx.Response) -> EddyError:
    try:
        error = response.json()["error"]
        return EddyError(
            f"{error['message']} ({error['code']}, HTTP {response.status_code})",
            error["code"],
            response.status_code,
        )
    except (ValueError, KeyError, TypeError):
        text = response.text.strip()[:200] or response.reason_phrase
        return EddyError(f"HTTP {response.status_code}: {text}", None, response.status_code)


def _unreachable(url: str, exc: Exception) -> EddyError:
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
        reason = "connection refused" if "refused" in reason.lower() else reason
        return EddyError(f"cannot connect to {url}: {reason} (is it running? see --url, EDDY_URL)")
    return EddyError(f"{url}: {reason}")


class EddyClient:
    def __init__(self, url: str = DEFAULT_URL, token: str | None = None, timeout: float = 30):
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout)

    def __enter__(self) -> EddyClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        """The response's JSON (None for 204); raises EddyError."""
        content = None if body is None else dumps(body).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            response = self._http.request(
                method, path, content=content, headers=headers, params=params
            )
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None
        if response.is_error:
            raise _server_error(response)
        if not response.content:
            return None
        return json.loads(response.content)  # the json module keeps big integers exact

    # --- topics ----------------------------------------------------------------------------
    def create_topic(
        self, name: str, partitions: int | None, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "config": dict(config)}
        if partitions is not None:
            body["partitions"] = partitions
        result: dict[str, Any] = self.request("POST", "/v1/topics", body)
        return result

    def list_topics(self) -> list[dict[str, Any]]:
        topics: list[dict[str, Any]] = self.request("GET", "/v1/topics")["topics"]
        return topics

    def describe_topic(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/topics/{quote(name)}")
        return result

    def alter_topic(
        self, name: str, partitions: int | None, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if partitions is not None:
            body["partitions"] = partitions
        if config:
            body["config"] = dict(config)
        result: dict[str, Any] = self.request("PATCH", f"/v1/topics/{quote(name)}", body)
        return result

    def delete_topic(self, name: str) -> None:
        self.request("DELETE", f"/v1/topics/{quote(name)}")

    # --- records ---------------------------------------------------------------------------
    def produce(self, topic: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Appends the batch atomically; one {partition, offset, timestamp} per record."""
        path = f"/v1/topics/{quote(topic)}/records"
        offsets: list[dict[str, Any]] = self.request("POST", path, {"records": records})["offsets"]
        return offsets

    def subscribe(self, topic: str, params: Mapping[str, str]) -> Subscription:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = f"{parts.path}/v1/topics/{quote(topic)}/ws"
        url = urlunsplit((scheme, parts.netloc, path, urlencode(params), ""))
        connection = ExitStack()  # websockets >= 17.1 wants connect() used as a context
        try:
            ws = connection.enter_context(
                connect(url, additional_headers=self.headers, open_timeout=30, max_size=None)
            )
        except InvalidStatus as exc:
            raise _server_error(
                httpx.Response(exc.response.status_code, content=bytes(exc.response.body or b""))
            ) from None
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            raise _unreachable(self.url, exc) from None
        return Subscription(ws, connection, group="group" in params)

    # --- groups ----------------------------------------------------------------------------
    def list_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self.request("GET", "/v1/groups")["groups"]
        return groups

    def describe_group(self, group: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/v1/groups/{quote(group)}")
        return result

    def reset_group(self, group: str, topic: str, to: str | int) -> dict[str, Any]:
        target: Any = {"timestamp": to} if isinstance(to, int) else to
        body = {"topic": topic, "to": target}
        result: dict[str, Any] = self.request("POST", f"/v1/groups/{quote(group)}/reset", body)
        return result

    def delete_group(self, group: str) -> None:
        self.request("DELETE", f"/v1/groups/{quote(group)}")


class Subscription:
    """Records of a WebSocket subscription. As a group member, a record counts as processed
    once the caller asks for the next one (or closes): those are committed every
    COMMIT_INTERVAL and on close, so what was not printed is delivered again (at-least-once)."""

    def __init__(self, ws: ClientConnection, connection: ExitStack, group: bool) -> None:
        self._ws = ws
        self._connection = connection
        self._group = group
        self._done: dict[int, int] = {}  # partition -> next offset, processed, not committed
        self._last: dict[str, Any] | None = None
        self._error: dict[str, Any] | None = None
        self.warnings: list[str] = []

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def records(self) -> Iterator[dict[str, Any]]:
        """Record frames (without "type"), in delivery order; raises EddyError when the server
        ends the subscription."""
        next_commit = time.monotonic() + COMMIT_INTERVAL
        while True:
            self._mark_last_done()
            if self._group and self._done and time.monotonic() >= next_commit:
                self._commit()
                next_commit = time.monotonic() + COMMIT_INTERVAL
            timeout = max(0.0, next_commit - time.monotonic()) if self._group else None
            try:
                text = self._ws.recv(timeout=timeout)
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                raise self._closed(exc) from None
            frame = json.loads(text)
            kind = frame.pop("type", None)
            if kind == "record":
                self._last = frame
                yield frame
            elif kind == "assignment":  # offsets of partitions given away would be refused
                owned = {int(p) for p in frame.get("partitions", {})}
                self._done = {p: o for p, o in self._done.items() if p in owned}
            elif kind == "error":
                self._on_error(frame)

    def close(self) -> None:
        """Commits what was processed (group mode), then closes the WebSocket."""
        try:
            self._mark_last_done()
            if self._group and self._done:
                self._commit()
                self._await_commit()
        finally:
            self._connection.close()

    def _mark_last_done(self) -> None:
        if self._last is not None:
            self._done[self._last["partition"]] = self._last["offset"] + 1
            self._last = None

    def _commit(self) -> None:
        offsets = {str(p): o for p, o in sorted(self._done.items())}
        self._done = {}
        try:
            self._ws.send(dumps({"type": "commit", "offsets": offsets}))
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    def _await_commit(self) -> None:
        """Waits for the server's `committed` (records arriving meanwhile were not processed:
        they stay uncommitted and go to the group's next reader)."""
        deadline = time.monotonic() + COMMIT_WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                frame = json.loads(self._ws.recv(timeout=left))
            except TimeoutError:
                break
            except ConnectionClosed as exc:
                raise self._closed(exc) from None
            if frame.get("type") == "committed":
                return
            if frame.get("type") == "error":
                self._on_error(frame)
                return
        raise EddyError("the server did not confirm the last commit")

    def _on_error(self, frame: dict[str, Any]) -> None:
        if frame.get("code") == "not_assigned":  # lost in a rebalance: the new owner re-reads
            self.warnings.append(str(frame.get("message")))
        else:  # the close that follows ends the subscription with this reason
            self._error = frame

    def _closed(self, exc: ConnectionClosed) -> EddyError:
        if self._error is not None:
            return EddyError(
                f"{self._error.get('message')} ({self._error.get('code')})",
                self._error.get("code"),
            )
        close = exc.rcvd
        if close is None:
            return EddyError("the connection to the server was lost")
        return EddyError(f"the server closed the subscription ({close.code} {close.reason})")


def subscription_params(
    start: str | None,
    offsets: str | None,
    keys: str | None,
    partitions: str | None,
    group: str | None,
) -> dict[str, str]:
    """The WebSocket query of `eddy consume` (absent options are left to the server)."""
    given = {"from": start, "offsets": offsets, "keys": keys, "partitions": partitions}
    params = {name: value for name, value in given.items() if value is not None}
    if group is not None:
        params["group"] = group
    return params


# --- produce's lines -----------------------------------------------------------------------
class LineError(ValueError):
    pass


def parse_line(line: str, raw: bool, key_separator: str | None) -> dict[str, Any]:
    """One stdin line as a record: `key<sep>value` with a separator (a line without it has no
    key), the value JSON unless raw. Raises LineError."""
    key: str | None = None
    text = line
    if key_separator is not None and key_separator in line:
        key, text = line.split(key_separator, 1)
    if raw:
        value: Any = text
    else:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise LineError(f"not valid JSON ({exc}); use --raw to send text") from None
    return {"key": key, "value": value}


def batches(
    lines: Iterable[str], max_records: int, max_bytes: int
) -> Iterator[list[tuple[int, str]]]:
    """Non-empty lines, numbered from 1, in batches of at most max_records lines and (about)
    max_bytes of text, so one request stays well below the server's body limit."""
    batch: list[tuple[int, str]] = []
    size = 0
    for number, line in enumerate(lines, 1):
        text = line.rstrip("\r\n")
        if not text:
            continue
        batch.append((number, text))
        size += len(text)
        if len(batch) >= max_records or size >= max_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class LineProducer:
    """Produces text lines as records, in batches (one request each, appended whole or not at
    all). After an error, every line before the failing one (or batch) was produced."""

    MAX_BATCH_BYTES = 1 << 20  # well below the server's default 16 MiB request limit

    def __init__(
        self,
        client: EddyClient,
        topic: str,
        raw: bool,
        key_separator: str | None,
        partition: int | None,
    ) -> None:
        self._client = client
        self._topic = topic
        self._raw = raw
        self._key_separator = key_separator
        self._partition = partition
        self.partitions: Counter[int] = Counter()  # records produced, per partition

    def send(self, lines: Iterable[str], batch_size: int, progress: Callable[[int], None]) -> None:
        """Raises LineError for a line that is not a record, EddyError if a batch failed."""
        for batch in batches(lines, batch_size, self.MAX_BATCH_BYTES):
            records: list[dict[str, Any]] = []
            for number, line in batch:
                try:
                    record = parse_line(line, self._raw, self._key_separator)
                except LineError as exc:
                    self._produce(records, batch[0][0], number - 1)
                    raise LineError(f"line {number}: {exc}") from None
                if self._partition is not None:
                    record["partition"] = self._partition
                records.append(record)
            self._produce(records, batch[0][0], batch[-1][0])
            progress(self.partitions.total())

    def _produce(self, records: list[dict[str, Any]], first: int, last: int) -> None:
        if not records:
            return
        try:
            offsets = self._client.produce(self._topic, records)
        except EddyError as exc:
            raise EddyError(
                f"lines {first}-{last} were not produced: {exc}", exc.code, exc.status
            ) from None
        self.partitions.update(o["partition"] for o in offsets)


def record_output(record: Mapping[str, Any], output: str) -> str:
    """A consumed record as one line: the record as JSON, or only its value (text as is)."""
    if output == "json":
        return dumps(record)
    if "value_base64" in record:
        return str(record["value_base64"])
    value = record.get("value")
    return value if isinstance(value, str) else dumps(value)
