"""A consumer-group worker: "send an email when an order is placed".

Run two (or more) copies; they share the partitions of topic `orders`. Each order is handled by
one of them, and committed only after its email went out, so a crash never loses an order
(at-least-once: an order handled but not yet committed is handled again by the next owner).

    python examples/order_worker.py                # joins group "emailer" on ws://127.0.0.1:8080
    python examples/order_worker.py ws://host:8080

A transient close reconnects with backoff and resumes at the group's committed offsets; a
permanent one (4400/4401/4403/4404) ends the worker with the server's message and status 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import websockets
from eddy_ws import BASE_URL, TRANSIENT_ERRORS, Backoff, check_close, closed_exception, run

BASE = sys.argv[1] if len(sys.argv) > 1 else BASE_URL
URL = f"{BASE}/v1/topics/orders/ws?group=emailer&from=earliest"


def send_email(order: dict[str, object]) -> None:
    # Make this idempotent in a real service (e.g. remember the order id you mailed): after a
    # crash the same order can arrive twice.
    print(f"email sent for order {order.get('id')}", flush=True)


async def work() -> None:
    backoff = Backoff()
    while True:  # the group resumes from the committed offsets
        error: dict[str, Any] | None = None
        try:
            async with websockets.connect(URL) as ws:
                async for frame in ws:
                    msg = json.loads(frame)
                    if msg["type"] == "assignment":
                        backoff.reset()
                        print(f"assigned partitions {sorted(msg['partitions'])}", flush=True)
                    elif msg["type"] == "record":
                        send_email(msg["value"])
                        commit = {str(msg["partition"]): msg["offset"] + 1}
                        await ws.send(json.dumps({"type": "commit", "offsets": commit}))
                    elif msg["type"] == "error":  # a refused commit, or why the server closes
                        error = msg
                        print(f"error: {msg['code']}: {msg['message']}", flush=True)
            how = check_close(ws.close_code, ws.close_reason or "", error)
        except websockets.ConnectionClosed as exc:
            how = closed_exception(exc, error)
        except TRANSIENT_ERRORS as exc:
            how = f"cannot connect ({exc})"
        print(f"disconnected: {how}; reconnecting", flush=True)
        await backoff.wait()


if __name__ == "__main__":
    run(work())
