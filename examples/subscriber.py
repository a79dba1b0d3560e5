"""Follow a topic over WebSocket and resume after a dropped connection without loss or repeats.

python examples/subscriber.py prices            # every key
python examples/subscriber.py prices AAPL,MSFT  # only these keys
"""

from __future__ import annotations

import asyncio
import json
import sys

import websockets


async def follow(topic: str, keys: str | None) -> None:
    positions: dict[str, int] = {}  # partition -> next offset to read
    while True:
        query = "from=latest"
        if positions:  # resume exactly where we stopped
            query = "offsets=" + ",".join(f"{p}:{o}" for p, o in positions.items())
        if keys:
            query += f"&keys={keys}"
        url = f"ws://127.0.0.1:8080/v1/topics/{topic}/ws?{query}"
        try:
            async with websockets.connect(url) as ws:
                async for frame in ws:
                    msg = json.loads(frame)
                    if msg["type"] == "subscribed":
                        for p, start in msg["partitions"].items():
                            positions.setdefault(p, start["offset"])
                    elif msg["type"] == "record":
                        print(msg["partition"], msg["offset"], msg["key"], msg["value"], flush=True)
                        positions[str(msg["partition"])] = msg["offset"] + 1
        except (OSError, websockets.ConnectionClosed) as exc:
            print(f"disconnected ({exc}); reconnecting", file=sys.stderr)
            await asyncio.sleep(1)


if __name__ == "__main__":
    asyncio.run(follow(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
