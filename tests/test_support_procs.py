"""The test harness's own start-up wait (tests/support/procs.py): a port from free_port() can be
taken by another process before the child binds it; the harness must notice and start again,
never talk to someone else's server."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import gateway_proc
from tests.support.gateway_proc import ROOT, echo_upstream, start_gateway
from tests.support.procs import PortTaken, free_port, listener_owned_by, wait_port

LISTEN = "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(60)"


@pytest.fixture
def squatter() -> Iterator[socket.socket]:
    """A listener of this test process: the port "another process" took."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s
    s.close()


def test_wait_port_with_an_owner_returns_once_that_process_listens() -> None:
    port = free_port()
    child = subprocess.Popen([sys.executable, "-c", LISTEN, str(port)])
    try:
        wait_port(port, owner=child)
        assert listener_owned_by(port, child.pid)
    finally:
        child.kill()
        child.wait()


def test_a_listener_held_by_someone_else_is_not_the_childs(squatter: socket.socket) -> None:
    port = squatter.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", LISTEN, str(port)], stderr=subprocess.DEVNULL)
    try:
        assert not listener_owned_by(port, child.pid)
        with pytest.raises(PortTaken):  # the child fails to bind and exits; a plain connect would succeed
            wait_port(port, owner=child)
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # what wait_port without an owner would have taken for the child's server
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_start_gateway_starts_again_when_its_port_was_taken(squatter: socket.socket,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    taken = squatter.getsockname()[1]
    with echo_upstream() as up:
        picks = iter([taken, free_port()])  # the first attempt's gateway port is already taken
        real = gateway_proc.free_port
        monkeypatch.setattr(gateway_proc, "free_port", lambda: next(picks, None) or real())
        gw = start_gateway(ROOT / "policies", up.url)
        try:
            assert gw.port != taken  # before: returned on the squatter's port, its requests not ours
            assert listener_owned_by(gw.port, gw.proc.pid)
            assert next(picks, None) is None  # both picks were used: a second attempt ran
        finally:
            gw.stop()
