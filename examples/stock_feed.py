"""Publish random stock prices over one WebSocket, with per-record acks.

python examples/stock_feed.py            # 10 updates per second until Ctrl-C
"""

from __future__ import annotations

import asyncio
import json
import random
import time

import websockets

SYMBOLS = {"AAPL": 187.3, "MSFT": 402.1, "GOOG": 141.8, "TSLA": 242.6}


async def main() -> None:
    async with websockets.connect("ws://127.0.0.1:8080/v1/topics/prices/publish") as ws:
        for n in range(1_000_000):
            symbol = random.choice(list(SYMBOLS))
            SYMBOLS[symbol] = round(SYMBOLS[symbol] * random.uniform(0.995, 1.005), 2)
            record = {
                "id": n,
                "key": symbol,
                "value": {"price": SYMBOLS[symbol], "at": time.time()},
            }
            await ws.send(json.dumps(record))
            ack = json.loads(await ws.recv())  # {"type": "ack", "id": n, "partition", "offset"}
            if ack["type"] != "ack":
                print("rejected:", ack)
            await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main())
