"""A consumer-group worker: "send an email when an order is placed".

Run two (or more) copies; they share the partitions of topic `orders`. Each order is handled by
one of them, and committed only after its email went out, so a crash never loses an order
(at-least-once: an order handled but not yet committed is handled again by the next owner).

    python examples/order_worker.py                # joins group "emailer" on ws://127.0.0.1:8080
    python examples/order_worker.py ws://host:8080
"""

from __future__ import annotations

import asyncio
import json
import sys

import websockets

BASE = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080"
URL = f"{BASE}/v1/topics/orders/ws?group=emailer&from=earliest"


def send_email(order: dict[str, object]) -> None:
    # Make this idempotent in a real service (e.g. remember the order id you mailed): after a
    # crash the same order can arrive twice.
    print(f"email sent for order {order.get('id')}", flush=True)


async def work() -> None:
    while True:  # reconnect forever: the group resumes from the committed offsets
        try:
            async with websockets.connect(URL) as ws:
                async for frame in ws:
                    msg = json.loads(frame)
                    if msg["type"] == "assignment":
                        print(f"assigned partitions {sorted(msg['partitions'])}", flush=True)
                    elif msg["type"] == "record":
                        send_email(msg["value"])
                        commit = {str(msg["partition"]): msg["offset"] + 1}
                        await ws.send(json.dumps({"type": "commit", "offsets": commit}))
                    elif msg["type"] == "error":
                        print(f"error: {msg['code']}: {msg['message']}", flush=True)
        except (OSError, websockets.ConnectionClosed) as exc:
            print(f"disconnected ({exc}); reconnecting", flush=True)
            await asyncio.sleep(1)


if __name__ == "__main__":
    asyncio.run(work())
