"""Publish random stock prices over one WebSocket, with per-record acks, as an idempotent
producer: after a dropped connection the unacknowledged update is sent again with the same
sequence, and the server stores it once.

python examples/stock_feed.py            # 10 updates per second until Ctrl-C
python examples/stock_feed.py 50         # 50 updates, then exit
EDDY_URL=ws://host:8080 python examples/stock_feed.py

A permanent close (4400/4401/4403/4404) ends it with the server's message and status 1.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from typing import Any

import websockets
from eddy_ws import (
    BASE_URL,
    TRANSIENT_ERRORS,
    Backoff,
    check_close,
    closed_exception,
    run,
    unread_error,
)
from websockets.asyncio.client import ClientConnection

SYMBOLS = {"AAPL": 187.3, "MSFT": 402.1, "GOOG": 141.8, "TSLA": 242.6}
# One producer id per run; the sequence numbers its records (the first may be any number).
URL = f"{BASE_URL}/v1/topics/prices/publish?producer_id=stock-feed-{uuid.uuid4().hex[:12]}"


def next_update(n: int) -> dict[str, Any]:
    symbol = random.choice(list(SYMBOLS))
    SYMBOLS[symbol] = round(SYMBOLS[symbol] * random.uniform(0.995, 1.005), 2)
    return {"id": n, "key": symbol, "value": {"price": SYMBOLS[symbol], "at": time.time()}}


async def main(count: int | None) -> None:
    backoff = Backoff()
    n = 0
    sequence = 0  # used up only by a stored record (a refused one leaves it for the next)
    record = next_update(n)
    while count is None or n < count:
        error: dict[str, Any] | None = None
        ws: ClientConnection | None = None
        try:
            async with websockets.connect(URL) as ws:
                while count is None or n < count:
                    # Sent again after a reconnect if unacked: same sequence, stored once.
                    await ws.send(json.dumps({**record, "sequence": sequence}))
                    answer = json.loads(await ws.recv())
                    if answer["type"] == "error" and "id" not in answer:
                        error = answer  # about the connection: its close follows
                        await ws.wait_closed()
                        break
                    backoff.reset()
                    if answer["type"] == "ack":
                        sequence += 1
                        print(
                            f"{record['key']} {record['value']['price']} -> partition "
                            f"{answer['partition']} offset {answer['offset']}",
                            flush=True,
                        )
                    else:
                        print(f"rejected: {answer['code']}: {answer['message']}", flush=True)
                    n += 1
                    record = next_update(n)
                    await asyncio.sleep(0.1)
            how = check_close(ws.close_code, ws.close_reason or "", error)
        except websockets.ConnectionClosed as exc:
            # Closed while sending: the server's error frame may still wait to be read.
            if error is None and ws is not None:
                error = await unread_error(ws)
            how = closed_exception(exc, error)
        except TRANSIENT_ERRORS as exc:
            how = f"cannot connect ({exc})"
        if count is not None and n >= count:
            return
        print(f"disconnected: {how}; reconnecting", file=sys.stderr, flush=True)
        await backoff.wait()


if __name__ == "__main__":
    run(main(int(sys.argv[1]) if len(sys.argv) > 1 else None))
