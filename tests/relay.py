"""A TCP relay between a client and a real server, for network faults a restart cannot make
precisely: answers that never arrive (`hold_replies`), then a cut connection (`cut`)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Relay:
    def __init__(self, target_port: int) -> None:
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._held: set[socket.socket] = set()  # client sockets whose replies are dropped
        self.dropped_bytes = 0  # of replies held back (lost) so far
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(
                target=self._pump, args=(upstream, client, client), daemon=True
            ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, held: socket.socket | None) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if held is not None and held in self._held:
                    with self._lock:
                        self.dropped_bytes += len(data)
                    continue  # lost on the way
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def hold_replies(self) -> None:
        """From now on, what the server sends on the open connections never arrives."""
        with self._lock:
            self._held = set(self._open)

    def cut(self) -> None:
        """Break every open connection (new ones are relayed normally)."""
        with self._lock:
            sockets, self._open = self._open, []
            self._held = set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._listener.close()
        self.cut()


@contextmanager
def relay_to(port: int) -> Iterator[Relay]:
    relay = Relay(port)
    try:
        yield relay
    finally:
        relay.close()
