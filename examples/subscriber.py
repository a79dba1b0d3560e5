"""Follow a topic over WebSocket and resume after a dropped connection without loss or repeats.

python examples/subscriber.py prices            # every key
python examples/subscriber.py prices AAPL,MSFT  # only these keys
EDDY_URL=ws://host:8080 python examples/subscriber.py prices

A transient close (server restart, lost network) reconnects with backoff and resumes with
`offsets=`, the next offset of every partition; a permanent one (bad parameters, unauthorized,
forbidden, topic not found or deleted) ends it with the server's message and exit status 1.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import quote, urlencode

import websockets
from eddy_ws import BASE_URL, TRANSIENT_ERRORS, Backoff, check_close, closed_exception, run


async def follow(topic: str, keys: str | None) -> None:
    positions: dict[str, int] = {}  # partition -> next offset to read
    backoff = Backoff()
    while True:
        query: dict[str, str] = {"from": "latest"}
        if positions:  # resume exactly where we stopped
            query["offsets"] = ",".join(f"{p}:{o}" for p, o in positions.items())
        if keys:
            query["keys"] = keys
        url = f"{BASE_URL}/v1/topics/{quote(topic, safe='')}/ws?{urlencode(query)}"
        error: dict[str, Any] | None = None  # the server's error frame, sent before a 44xx close
        try:
            async with websockets.connect(url) as ws:
                async for frame in ws:
                    msg = json.loads(frame)
                    if msg["type"] == "subscribed":
                        backoff.reset()
                        for p, start in msg["partitions"].items():
                            positions[p] = start["offset"]  # also after a retention reset
                    elif msg["type"] == "record":
                        print(msg["partition"], msg["offset"], msg["key"], msg["value"], flush=True)
                        positions[str(msg["partition"])] = msg["offset"] + 1
                    elif msg["type"] == "error":
                        error = msg
            how = check_close(ws.close_code, ws.close_reason or "", error)  # 1000/1001 end the loop
        except websockets.ConnectionClosed as exc:
            how = closed_exception(exc, error)
        except TRANSIENT_ERRORS as exc:
            how = f"cannot connect ({exc})"
        print(f"disconnected: {how}; reconnecting", file=sys.stderr, flush=True)
        await backoff.wait()


if __name__ == "__main__":
    run(follow(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
