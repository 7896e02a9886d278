"""A deliberately misbehaving upstream on a real socket, in a thread: each test scripts the answer.

    with RogueUpstream(handler) as up:         # handler(conn, head) runs per accepted request
        ... gateway pointed at up.url ...
    up.accepted, up.heads, up.closed_by_peer   # what the gateway did to it

`handler` gets the connected socket and the request head (bytes up to the blank line), may read
more, sleep, write anything, and returns True to keep the connection for another request. Every
request head is recorded with its arrival time, and the time the gateway closed each connection.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

Handler = Callable[[socket.socket, bytes], bool | None]


def read_head(conn: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a request head")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def read_body(conn: socket.socket, head: bytes, rest: bytes) -> bytes:
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return rest[:length]


def wait_closed(conn: socket.socket, timeout: float) -> float | None:
    """Seconds until the peer closed the connection, or None if it stayed open for `timeout`."""
    start = time.monotonic()
    conn.settimeout(0.1)
    while time.monotonic() - start < timeout:
        try:
            if conn.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - start
    return None


class RogueUpstream:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(512)
        self.port = self.srv.getsockname()[1]
        self.accepted = 0
        self.first_lines: list[bytes] = []  # request line of each connection's first request
        self.heads: list[tuple[float, bytes]] = []
        self.events: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def note(self, what: str) -> None:
        with self.lock:
            self.events.append((time.monotonic(), what))

    def __enter__(self) -> RogueUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.srv.close()
        self.thread.join(5)

    def _serve(self) -> None:
        self.srv.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except OSError:
                continue
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def connections_for(self, path: bytes) -> int:
        """Connections whose first request went to `path` (the gateway's probes are left out)."""
        with self.lock:
            return sum(1 for line in self.first_lines if line.split(b" ")[1:2] == [path])

    def _conn(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            first = True
            while not self.stop.is_set():
                try:
                    head, buf = read_head(conn, buf)
                except OSError:
                    return
                with self.lock:
                    self.heads.append((time.monotonic(), head))
                    if first:
                        self.first_lines.append(head.split(b"\r\n", 1)[0])
                        first = False
                try:
                    keep = self.handler(conn, head + b"\r\n\r\n" + buf)
                except OSError:
                    return
                buf = b""
                if not keep:
                    return
