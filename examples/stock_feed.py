"""Publish random stock prices as an idempotent producer, with an ack per record (eddy.client):
after a dropped connection the unacknowledged update is sent again with the same sequence,
and the server stores it once.

python examples/stock_feed.py            # 10 updates per second until Ctrl-C
python examples/stock_feed.py 50         # 50 updates, then exit
EDDY_URL=http://host:8080 python examples/stock_feed.py

A permanent close (4400/4401/4403/4404) ends it with the server's message and status 1.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
import time
from typing import Any

from eddy.client import AsyncClient, ClientError

SYMBOLS = {"AAPL": 187.3, "MSFT": 402.1, "GOOG": 141.8, "TSLA": 242.6}


def next_update() -> dict[str, Any]:
    symbol = random.choice(list(SYMBOLS))
    SYMBOLS[symbol] = round(SYMBOLS[symbol] * random.uniform(0.995, 1.005), 2)
    return {"key": symbol, "value": {"price": SYMBOLS[symbol], "at": time.time()}}


async def main(count: int | None) -> None:
    url = os.environ.get("EDDY_URL", "http://127.0.0.1:8080")
    # Idempotent (a random producer id): a resend after a reconnect is stored once.
    async with AsyncClient(url) as eddy, eddy.publisher("prices") as feed:
        feed.on_disconnect = lambda error, delay: print(
            f"disconnected: {error}; reconnecting", file=sys.stderr, flush=True
        )
        for _ in range(count) if count is not None else itertools.count():
            update = next_update()
            try:
                ack = await feed.publish(update)
            except ClientError as error:
                if feed.error is not None:  # the publisher stopped: permanent
                    raise
                print(f"rejected: {error.code}: {error.message}", flush=True)
                continue
            print(
                f"{update['key']} {update['value']['price']} -> partition {ack.partition} "
                f"offset {ack.offset}",
                flush=True,
            )
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else None))
    except ClientError as error:
        print(f"error: {error.code}: {error.message} (close {error.close_code})", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
