"""Reading the common client frames without websockets' parser (a publisher's hot path).

A publishing client sends many small, complete, masked text frames; websockets' generator-based
parser costs several Python calls per frame. `scan` reads such frames straight from the received
bytes and stops at the first frame it does not handle (fragments, close, RSV bits, an unmasked or
oversized frame, invalid UTF-8, a 64-bit length): from that frame boundary on, the bytes go to
websockets' parser, which handles every case (and every error) as before.
"""

from __future__ import annotations

from typing import NamedTuple

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

TEXT, BINARY, PING, PONG = 0x1, 0x2, 0x9, 0xA
_FIN = 0x80
_MASKED = 0x80
_CONTROL_MAX = 125  # RFC 6455 section 5.5


class Scanned(NamedTuple):
    messages: list[tuple[int, str | bytes]]  # (opcode, payload): text decoded, others bytes
    consumed: int  # bytes of the input these frames took
    handled: bool  # False: the frame at `consumed` is not one `scan` reads (hand it over)


def scan(data: bytes, max_size: int | None) -> Scanned:
    """The complete frames at the start of `data` that `scan` handles (see the module)."""
    messages: list[tuple[int, str | bytes]] = []
    pos, end = 0, len(data)
    while end - pos >= 2:
        first, second = data[pos], data[pos + 1]
        opcode = first & 0x0F
        if first & 0xF0 != _FIN or not second & _MASKED or opcode not in (TEXT, BINARY, PING, PONG):
            return Scanned(messages, pos, False)
        length = second & 0x7F
        head = pos + 2
        if length == 127 or (length > _CONTROL_MAX and opcode >= PING):
            return Scanned(messages, pos, False)
        if length == 126:
            if end - head < 2:
                break
            length = int.from_bytes(data[head : head + 2], "big")
            head += 2
        if max_size is not None and length > max_size:
            return Scanned(messages, pos, False)
        stop = head + 4 + length
        if stop > end:
            break
        payload = apply_mask(data[head + 4 : stop], data[head : head + 4])
        if opcode == TEXT:
            try:
                messages.append((TEXT, payload.decode()))
            except UnicodeDecodeError:
                return Scanned(messages, pos, False)
        else:
            messages.append((opcode, payload))
        pos = stop
    return Scanned(messages, pos, True)
