"""A consumer-group worker: "send an email when an order is placed" (eddy.client).

Run two (or more) copies; they share the partitions of topic `orders`. Each order is handled by
one of them, and committed only after its email went out, so a crash never loses an order
(at-least-once: an order handled but not yet committed is handled again by the next owner).

    python examples/order_worker.py                # joins group "emailer" on 127.0.0.1:8080
    python examples/order_worker.py http://host:8080

A transient close reconnects with backoff and resumes at the group's committed offsets; a
permanent one (4400/4401/4403/4404) ends the worker with the server's message and status 1.
"""

from __future__ import annotations

import asyncio
import os
import sys

from eddy.client import AsyncClient, ClientError, Conflict, ConnectionLost

URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EDDY_URL", "http://127.0.0.1:8080")


def send_email(order: dict[str, object]) -> None:
    # Make this idempotent in a real service (e.g. remember the order id you mailed): after a
    # crash the same order can arrive twice.
    print(f"email sent for order {order.get('id')}", flush=True)


async def work() -> None:
    async with AsyncClient(URL) as eddy:
        orders = eddy.subscribe("orders", group="emailer", start="earliest")
        orders.on_assignment = lambda owned: print(
            f"assigned partitions {[str(p) for p in owned]}", flush=True
        )
        orders.on_disconnect = lambda error, delay: print(
            f"disconnected: {error}; reconnecting", flush=True
        )
        async for record in orders:
            send_email(record.value)
            try:
                await orders.commit()
            except (Conflict, ConnectionLost) as error:  # lost in a rebalance, or a reconnect:
                print(f"not committed: {error}", flush=True)  # the next owner mails it again


if __name__ == "__main__":
    try:
        asyncio.run(work())
    except ClientError as error:
        print(f"error: {error.code}: {error.message} (close {error.close_code})", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
