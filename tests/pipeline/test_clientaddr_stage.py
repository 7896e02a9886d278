"""ClientAddressStage on its own, driven over ASGI: with no trusted proxy the peer is the client (an
IPv4-mapped peer unmapped, anything else kept as it is) and every X-Forwarded-For is ignored; behind
trusted proxies every X-Forwarded-For line, and only that header, is read, and only when the peer is
one of them. The stage never answers and hands on exactly what it got.
(`tests/test_clientaddr.py` covers the address parsing and the proxy walk themselves.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.clientaddr import TrustedProxies
from gateway.context import RequestContext
from gateway.pipeline.clientaddr import ClientAddressStage
from tests.pipeline.stage_kit import RECEIVE, SEND, Downstream, stage_scope

PROXY = "10.0.0.5"
CLIENT = "203.0.113.9"
PLANTED = "198.51.100.66"  # what a client writes into its own X-Forwarded-For


def xff(*values: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v) for v in values]


async def seen(peer: str, proxies: list[str], headers: list[tuple[bytes, bytes]] | None = None) -> str:
    """The client address the next stage sees; checks the stage handed on exactly what it got."""
    ctx = RequestContext("req-1", peer, SimpleNamespace())  # type: ignore[arg-type]
    down = Downstream()
    scope = stage_scope(ctx, headers=headers)
    await ClientAddressStage(down, TrustedProxies(proxies))(scope, RECEIVE, SEND)
    assert down.reached == [ctx]
    assert down.handed == [(scope, RECEIVE, SEND)]
    return ctx.client_ip


# --- no trusted proxies ---------------------------------------------------------------------------

def test_the_stage_is_on_only_with_trusted_proxies() -> None:
    assert ClientAddressStage(Downstream(), TrustedProxies(["10.0.0.0/8"])).enabled is True
    assert ClientAddressStage(Downstream(), TrustedProxies([])).enabled is False


@pytest.mark.parametrize("peer", [CLIENT, "2001:db8::1", PROXY])
async def test_without_trusted_proxies_x_forwarded_for_is_ignored(peer: str) -> None:
    assert await seen(peer, [], xff(PLANTED.encode(), b"192.0.2.1")) == peer


@pytest.mark.parametrize(("peer", "client"), [
    pytest.param("::ffff:203.0.113.9", CLIENT, id="mapped_v4"),
    pytest.param("::ffff:10.0.0.5", PROXY, id="mapped_private_v4"),
    pytest.param("2001:db8::ffff:1", "2001:db8::ffff:1", id="v6_not_mapped"),
    pytest.param("::ffff:not-an-ip", "::ffff:not-an-ip", id="mapped_prefix_on_garbage"),
    pytest.param("0.0.0.0", "0.0.0.0", id="unspecified"),  # what RequestIdStage sets without a client
])
async def test_without_trusted_proxies_only_a_mapped_peer_is_respelled(peer: str, client: str) -> None:
    assert await seen(peer, [], xff(PLANTED.encode())) == client


# --- behind trusted proxies -----------------------------------------------------------------------

async def test_a_trusted_peer_s_x_forwarded_for_names_the_client() -> None:
    assert await seen(PROXY, ["10.0.0.0/8"], xff(CLIENT.encode())) == CLIENT


async def test_a_trusted_peer_without_x_forwarded_for_is_the_client() -> None:
    assert await seen(PROXY, ["10.0.0.0/8"]) == PROXY


async def test_an_untrusted_peer_s_x_forwarded_for_is_ignored() -> None:
    assert await seen(CLIENT, ["10.0.0.0/8"], xff(PLANTED.encode())) == CLIENT


async def test_what_the_client_planted_left_of_the_first_untrusted_hop_is_ignored() -> None:
    assert await seen(PROXY, ["10.0.0.0/8"], xff(f"{PLANTED}, {CLIENT}, 10.0.0.7".encode())) == CLIENT


async def test_every_x_forwarded_for_line_is_read_in_order() -> None:
    # Two lines are one list: the rightmost entry of the last line is the nearest hop.
    assert await seen(PROXY, ["10.0.0.0/8"], xff(PLANTED.encode(), f"{CLIENT}, 10.0.0.7".encode())) == CLIENT
    assert await seen(PROXY, ["10.0.0.0/8"], xff(CLIENT.encode(), b"10.0.0.7")) == CLIENT
    assert await seen(PROXY, ["10.0.0.0/8"], xff(b"10.0.0.7", CLIENT.encode())) == CLIENT


async def test_only_x_forwarded_for_is_read() -> None:
    others = [(b"x-real-ip", PLANTED.encode()), (b"forwarded", f"for={PLANTED}".encode()),
              (b"x-forwarded-host", PLANTED.encode()), (b"x-client-ip", PLANTED.encode())]
    assert await seen(PROXY, ["10.0.0.0/8"], others) == PROXY
    assert await seen(PROXY, ["10.0.0.0/8"], [*others, *xff(CLIENT.encode()), *others]) == CLIENT


async def test_a_mapped_trusted_peer_is_unmapped_and_its_header_read() -> None:
    assert await seen("::ffff:10.0.0.5", ["10.0.0.0/8"], xff(CLIENT.encode())) == CLIENT
    assert await seen("::ffff:10.0.0.5", ["10.0.0.0/8"]) == PROXY


async def test_garbage_in_x_forwarded_for_leaves_the_last_trusted_hop() -> None:
    assert await seen(PROXY, ["10.0.0.0/8"], xff(f"{PLANTED}, not-an-ip, 10.0.0.7".encode())) == "10.0.0.7"
