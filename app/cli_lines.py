"""The `eddy produce` and `eddy consume` commands' text side: stdin lines as records (in
batches, each appended whole or not at all) and records as output lines. The talking to the
server is `eddy.client`'s."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from eddy.client import Client, ClientError

# Between commits of what a group member has printed: a bounded amount is delivered again if
# the process is killed, and the server is not asked for a commit per record.
COMMIT_INTERVAL = 1.0  # seconds
COMMIT_WAIT = 5.0  # seconds to wait for the answer to the last commit


def dumps(value: Any) -> str:
    """JSON as the server sends it back: big integers stay exact (unlike float-based parsers)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class BatchFailed(Exception):
    """A batch of lines was not produced; str() says which lines and why."""


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
        client: Client,
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
        """Raises LineError for a line that is not a record, BatchFailed if a batch failed."""
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
            acks = self._client.produce(self._topic, records)
        except ClientError as exc:
            raise BatchFailed(f"lines {first}-{last} were not produced: {exc}") from None
        self.partitions.update(ack.partition for ack in acks)


def record_output(record: Mapping[str, Any], output: str) -> str:
    """A consumed record as one line: the record as JSON, or only its value (text as is)."""
    if output == "json":
        return dumps(record)
    if "value_base64" in record:
        return str(record["value_base64"])
    value = record.get("value")
    return value if isinstance(value, str) else dumps(value)
