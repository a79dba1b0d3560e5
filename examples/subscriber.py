"""Follow a topic and resume after a dropped connection without loss or repeats (eddy.client).

python examples/subscriber.py prices            # every key
python examples/subscriber.py prices AAPL,MSFT  # only these keys
EDDY_URL=http://host:8080 python examples/subscriber.py prices

A transient close (server restart, lost network) reconnects with backoff and resumes with
`offsets=`, the next offset of every partition; a permanent one (bad parameters, unauthorized,
forbidden, topic not found or deleted) ends it with the server's message and exit status 1.
"""

from __future__ import annotations

import asyncio
import os
import sys

from eddy.client import AsyncClient, ClientError


async def follow(topic: str, keys: list[str] | None) -> None:
    async with AsyncClient(os.environ.get("EDDY_URL", "http://127.0.0.1:8080")) as eddy:
        subscription = eddy.subscribe(topic, start="latest", keys=keys)
        subscription.on_disconnect = lambda error, delay: print(
            f"disconnected: {error}; reconnecting in {delay:.1f} s", file=sys.stderr, flush=True
        )
        async for record in subscription:
            print(record.partition, record.offset, record.key, record.value, flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(follow(sys.argv[1], sys.argv[2].split(",") if len(sys.argv) > 2 else None))
    except ClientError as error:  # permanent: retrying would fail the same way
        print(f"error: {error.code}: {error.message} (close {error.close_code})", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
