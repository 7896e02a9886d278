"""Fallback benchmark upstream, used only when nginx is not installed: `python -m bench.upstream PORT`.

Answers every request with the same tiny JSON as the nginx upstream, over keep-alive HTTP/1.1.
It is slower than nginx, so figures from a run that used it are not comparable with §4.
"""

from __future__ import annotations

import asyncio
import sys

BODY = b'{"ok":true,"items":[1,2,3]}'
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)


class _Http(asyncio.Protocol):
    """Minimal request splitter: answers each complete header block; skips Content-Length bodies."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1] or 0)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            if self.transport is not None:
                self.transport.write(RESPONSE)


async def _main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(_Http, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(int(sys.argv[1])))
    else:
        uvloop.run(_main(int(sys.argv[1])))
