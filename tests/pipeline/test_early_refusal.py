"""An early refusal (before the body is read) reaches the client as a response, not a reset.

The client has already sent (part of) its body when the gateway answers 401/413; closing the
socket with unread data would make the kernel send RST and the client could lose the answer.
"""

from __future__ import annotations

import socket
import threading

import pytest

from tests.core.conftest import core_policy, gw, upstream  # noqa: F401  (module fixtures)
from tests.support.gateway_proc import Proc
from tests.support.rawhttp import read_response


@pytest.mark.parametrize("size,declared", [(2000, 2000), (300_000, 300_000), (900, 900)],
                         ids=["just_over_cap", "far_over_cap", "within_cap_unknown_route"])
def test_refusal_while_client_is_sending_its_body(gw: Proc, size: int, declared: int) -> None:  # noqa: F811
    path = "/v1/nope" if size < 1024 else "/v1/echo"
    with socket.create_connection(("127.0.0.1", gw.port)) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Length: {declared}\r\n\r\n".encode()
        # Send the body from another thread, as a client that does not wait for an answer would.
        sender = threading.Thread(target=lambda: _send_quietly(s, head + b"x" * size), daemon=True)
        sender.start()
        r = read_response(s, timeout=5)
        sender.join(5)
    assert r.status in (404, 413)
    assert r.json()["reason"] in ("route.not_found", "request.body_too_large")


def _send_quietly(s: socket.socket, data: bytes) -> None:
    try:
        s.sendall(data)
    except OSError:
        pass  # the server may stop reading once it answered; the answer is what matters
