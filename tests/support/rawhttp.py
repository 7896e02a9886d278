"""Raw HTTP/1.1 over a socket, for requests a normal client would refuse or normalise."""

from __future__ import annotations

import json
import socket
from typing import Any


class RawResponse:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(sock: socket.socket, timeout: float = 10.0) -> RawResponse:
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before headers: {buf!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    if status == 100:
        return RawResponse(100, [], rest)
    headers = [tuple(x.split(": ", 1)) for x in lines[1:]]
    resp = RawResponse(status, headers, b"")  # type: ignore[arg-type]
    length = resp.header("content-length")
    if length is not None:
        while len(rest) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        resp.body = rest[: int(length)]
    elif (resp.header("transfer-encoding") or "").lower() == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        out = b""
        while rest:
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        resp.body = out
    return resp


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> RawResponse:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock, timeout)


def get(port: int, target: str, extra: str = "") -> RawResponse:
    req = f"GET {target} HTTP/1.1\r\nHost: gw\r\n{extra}Connection: close\r\n\r\n".encode("latin-1")
    return raw_request(port, req)
