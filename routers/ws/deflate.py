"""permessage-deflate (RFC 7692) for subscribers, without losing encode-once.

The server always answers an offer with `server_no_context_takeover` and
`client_no_context_takeover` (RFC 7692 7.1.1: a server may add both to its response even when
the offer lacks them; websockets' `ServerPerMessageDeflateFactory` does when configured so).
Without context takeover each message is compressed on its own, so a record's compressed frame
is the same bytes for every subscriber that negotiated the same window size: `DeflateFrames` is
the tail's encoder for them, one instance per parameter set, and the tail caches its frames per
record next to the uncompressed ones (`TailEntry.encoded`, `PartitionTail.joined`). Compression
cost grows with records and parameter sets (a handful of window sizes), not with subscribers.
No connection keeps a zlib context either (an idle subscriber costs no compression memory), and
since every compressed connection is in the shared path there is no per-connection fallback to
bound. A client cannot insist on server context takeover: the server's answer decides (a client
that could not accept it would fail the handshake and reconnect without offering compression).

The frames are made with the websockets library's own extension (`PerMessageDeflate.encode`) and
frame serialization (`Frame.serialize`): nothing here frames or deflates by hand. Other messages
(subscribed, errors, acks) stay uncompressed: that is valid on a connection with the extension
(RFC 7692 6: RSV1 clear), and they are small.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from websockets.frames import Frame, Opcode

from eddy.broker import Encoder, record_frame_bytes
from eddy.models.log import StoredRecord
from eddy.routers.ws.frames import FRAMES

WINDOW_BITS = 12  # 4 KiB windows, uvicorn's choice too: records are small, memory is not free
COMPRESS_SETTINGS: dict[str, Any] = {"memLevel": 5}


def server_deflate_factory() -> ServerPerMessageDeflateFactory:
    """What the server offers back: compression with no context takeover on either side."""
    return ServerPerMessageDeflateFactory(
        server_no_context_takeover=True,
        client_no_context_takeover=True,
        server_max_window_bits=WINDOW_BITS,
        client_max_window_bits=WINDOW_BITS,
        compress_settings=COMPRESS_SETTINGS,
    )


class DeflateFrames:
    """The tail's encoder for subscribers with permessage-deflate: a record as one complete,
    compressed text frame (RSV1 set). One instance per parameter set (`deflate_frames`), so the
    tail's caches, keyed by encoder, share the bytes among all such subscribers."""

    __slots__ = ("_settings", "window_bits")

    def __init__(self, window_bits: int, compress_settings: tuple[tuple[str, Any], ...]) -> None:
        self.window_bits = window_bits
        self._settings = dict(compress_settings)

    def record(self, topic: str, record: StoredRecord) -> bytes:
        frame = Frame(Opcode.TEXT, record_frame_bytes(topic, record))
        # A fresh extension object per record: `encode` keeps its compressor on the object
        # between setting it up and deleting it, and this encoder is shared by the servers of
        # every thread in the process (functools.cache below); one object shared by all let one
        # thread's record find another's compressor gone. Without context takeover the object
        # holds nothing between records, and making one costs 0.3 µs (less than the zlib
        # compressor `encode` makes for each record anyway).
        extensions: Sequence[Extension] = [
            PerMessageDeflate(True, True, 15, self.window_bits, self._settings)
        ]
        return frame.serialize(mask=False, extensions=extensions)

    def __repr__(self) -> str:
        return f"DeflateFrames(window_bits={self.window_bits})"


@functools.cache
def deflate_frames(
    window_bits: int, compress_settings: tuple[tuple[str, Any], ...]
) -> DeflateFrames:
    return DeflateFrames(window_bits, compress_settings)


def negotiated_encoder(extensions: Sequence[Extension]) -> Encoder:
    """The record encoder for a connection with these negotiated extensions: shared compressed
    frames for permessage-deflate without server context takeover, else plain frames."""
    for extension in extensions:
        if isinstance(extension, PerMessageDeflate) and extension.local_no_context_takeover:
            settings = tuple(sorted(extension.compress_settings.items()))
            return deflate_frames(extension.local_max_window_bits, settings)
    # No extension, or one with context takeover (only if a server factory other than
    # `server_deflate_factory` negotiated it): uncompressed frames are valid either way.
    return FRAMES
