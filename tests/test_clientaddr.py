from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.clientaddr import CidrSet, TrustedProxies, parse_address
from gateway.pipeline.clientaddr import ClientAddressStage

PROXY_CIDRS = ["10.0.0.0/8", "192.168.1.1", "2001:db8:ffff::/48"]
PROXIES = TrustedProxies(PROXY_CIDRS)


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        pytest.param("203.0.113.9", [], "203.0.113.9", id="untrusted_peer_no_header"),
        pytest.param("203.0.113.9", [b"1.2.3.4"], "203.0.113.9", id="untrusted_peer_spoofed_xff"),
        pytest.param("203.0.113.9", [b"10.0.0.5, 1.2.3.4"], "203.0.113.9", id="untrusted_peer_spoofed_chain"),
        pytest.param("10.0.0.1", [], "10.0.0.1", id="trusted_peer_no_header"),
        pytest.param("10.0.0.1", [b"198.51.100.7"], "198.51.100.7", id="trusted_peer_one_hop"),
        pytest.param(
            "10.0.0.1", [b"6.6.6.6, 198.51.100.7"], "198.51.100.7", id="client_planted_left_entry_ignored"
        ),
        pytest.param(
            "10.0.0.1",
            [b"198.51.100.7, 10.1.1.1, 192.168.1.1"],
            "198.51.100.7",
            id="chain_of_trusted_proxies",
        ),
        pytest.param(
            "10.0.0.1", [b"6.6.6.6", b"198.51.100.7, 10.2.2.2"], "198.51.100.7", id="several_header_lines"
        ),
        pytest.param("10.0.0.1", [b"10.3.3.3, 10.2.2.2"], "10.3.3.3", id="all_trusted_leftmost"),
        pytest.param("10.0.0.1", [b"garbage"], "10.0.0.1", id="garbage_only_keeps_peer"),
        pytest.param("10.0.0.1", [b"1.2.3.4, garbage, 10.2.2.2"], "10.2.2.2", id="garbage_stops_walk"),
        pytest.param("10.0.0.1", [b"1.2.3.4, , 10.2.2.2"], "10.2.2.2", id="empty_entry_stops_walk"),
        pytest.param("10.0.0.1", [b"1.2.3.4,"], "10.0.0.1", id="trailing_comma_stops_walk"),
        pytest.param("10.0.0.1", [b"1.2.3.4:999x"], "10.0.0.1", id="bad_port_is_garbage"),
        pytest.param("10.0.0.1", [b"unknown"], "10.0.0.1", id="rfc7239_unknown_is_garbage"),
        pytest.param("10.0.0.1", ["5.5.5.5\u00e9".encode()], "10.0.0.1", id="non_ascii_is_garbage"),
        pytest.param("10.0.0.1", [b"  198.51.100.7  "], "198.51.100.7", id="whitespace_trimmed"),
        pytest.param("10.0.0.1", [b"198.51.100.7:5555"], "198.51.100.7", id="ipv4_with_port"),
        pytest.param("10.0.0.1", [b"[2001:db8::1]:443"], "2001:db8::1", id="bracketed_ipv6_with_port"),
        pytest.param("10.0.0.1", [b"2001:DB8:0::1"], "2001:db8::1", id="ipv6_normalised"),
        pytest.param("2001:db8:ffff::1", [b"2001:db8::9"], "2001:db8::9", id="ipv6_trusted_peer"),
        pytest.param("2001:db8:1::1", [b"1.2.3.4"], "2001:db8:1::1", id="ipv6_untrusted_peer"),
        pytest.param("::ffff:10.0.0.1", [b"198.51.100.7"], "198.51.100.7", id="ipv4_mapped_peer_trusted"),
        pytest.param("::ffff:10.0.0.1", [], "10.0.0.1", id="ipv4_mapped_trusted_peer_no_header_unmapped"),
        pytest.param("::ffff:203.0.113.9", [b"1.2.3.4"], "203.0.113.9", id="ipv4_mapped_peer_untrusted"),
        pytest.param("10.0.0.1", [b"::ffff:10.9.9.9, 10.2.2.2"], "10.9.9.9", id="ipv4_mapped_entry_trusted"),
        pytest.param("testclient", [b"1.2.3.4"], "testclient", id="non_ip_peer_untrusted"),
    ],
)
def test_client_ip(peer: str, xff: list[bytes], expected: str) -> None:
    # A fresh instance: its lookup cache holds no answer computed before this test (under mutmut
    # a module-level instance's cache, filled by the clean run, would answer for the mutant).
    assert TrustedProxies(PROXY_CIDRS).client_ip(peer, xff) == expected


def test_no_trusted_proxies_ignores_header() -> None:
    proxies = TrustedProxies([])
    assert proxies.client_ip("10.0.0.1", [b"1.2.3.4"]) == "10.0.0.1"


def test_the_peer_comes_back_normalised_with_or_without_proxies() -> None:
    """One spelling of one client: an IPv4-mapped peer is unmapped whether no proxy is configured
    or the peer is simply not one of them (it was returned as given in the first case)."""
    for cidrs in ([], PROXY_CIDRS):
        assert TrustedProxies(cidrs).client_ip("::ffff:203.0.113.9", [b"1.2.3.4"]) == "203.0.113.9"
        assert TrustedProxies(cidrs).client_ip("2001:DB8::9", []) == "2001:db8::9"


def test_repeated_calls_give_same_answer() -> None:
    # The per-instance cache must not change answers (nor leak across instances).
    other = TrustedProxies(["198.51.100.0/24"])
    for _ in range(3):
        assert PROXIES.client_ip("10.0.0.1", [b"198.51.100.7"]) == "198.51.100.7"
        assert other.client_ip("10.0.0.1", [b"198.51.100.7"]) == "10.0.0.1"


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        pytest.param("10.0.0.0/33", "invalid CIDR", id="prefix_too_long"),
        pytest.param("10.0.0.256", "invalid CIDR", id="octet_out_of_range"),
        pytest.param("10.0.0.1/8", 'did you mean "10.0.0.0/8"', id="host_bits_set"),
        pytest.param("localhost", "invalid CIDR", id="hostname"),
        pytest.param("", "^empty CIDR$", id="empty"),
        pytest.param("2001:db8::/129", "invalid CIDR", id="ipv6_prefix_too_long"),
        pytest.param("10.0.0.0/8,", "invalid CIDR", id="stray_comma"),
    ],
)
def test_malformed_cidr_refused(cidr: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrustedProxies([cidr])


def test_from_env_splits_commas_and_spaces() -> None:
    proxies = TrustedProxies.from_env(" 10.0.0.0/8, 172.16.0.0/12  ::1 ")
    assert [str(n) for n in proxies.networks] == ["10.0.0.0/8", "172.16.0.0/12", "::1/128"]
    assert TrustedProxies.from_env("").networks == ()


def test_from_env_refuses_malformed() -> None:
    with pytest.raises(ValueError, match='"10.0.0.0/40"'):
        TrustedProxies.from_env("10.0.0.0/8, 10.0.0.0/40")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1.2.3.4", "1.2.3.4", id="v4"),
        pytest.param("[::1]", "::1", id="bracketed_v6"),
        pytest.param("[::1", None, id="unclosed_bracket"),
        pytest.param("[::1]x", None, id="junk_after_bracket"),
        # The first ']' closes the address: '::1%]' (a scope id of ']') is not looked for further right.
        pytest.param("[::1%]]", None, id="second_closing_bracket"),
        pytest.param("[::1]x80", None, id="junk_before_port_after_bracket"),
        pytest.param("[::1]:", None, id="bracketed_empty_port"),
        pytest.param("[::1]:x4", None, id="bracketed_port_not_digits"),
        pytest.param("[::1]:8", "::1", id="bracketed_one_digit_port"),
        pytest.param("1.2.3.4:80", "1.2.3.4", id="v4_with_port"),
        pytest.param("1.2.3.4:8", "1.2.3.4", id="v4_with_one_digit_port"),
        pytest.param("::1", "::1", id="v6_two_colons_not_a_port"),
        pytest.param("2001:DB8::1", "2001:db8::1", id="v6_unbracketed"),
        pytest.param("1.2.3.4:", None, id="empty_port"),
        # A header decoded as latin-1 can carry '²' (0xB2): a digit to str.isdigit(), not a port.
        pytest.param("1.2.3.4:\u00b2", None, id="superscript_port"),
        pytest.param("[::1]:\u00b2", None, id="bracketed_superscript_port"),
        pytest.param("1.2.3.4:\u0663", None, id="arabic_indic_port"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_address(text: str, expected: str | None) -> None:
    ip = parse_address(text)
    assert (str(ip) if ip is not None else None) == expected


def test_cidr_set_membership() -> None:
    allow = CidrSet(["203.0.113.0/24", "2001:db8::/32"])
    assert "203.0.113.200" in allow
    assert "2001:db8::5" in allow
    assert "203.0.114.1" not in allow
    assert "not an ip" not in allow
    assert not CidrSet([])


def test_is_trusted() -> None:
    proxies = TrustedProxies(PROXY_CIDRS)  # fresh: nothing cached from an earlier test
    assert proxies.is_trusted("10.1.2.3")
    assert proxies.is_trusted("::ffff:10.1.2.3")
    assert proxies.is_trusted("192.168.1.1")
    assert not proxies.is_trusted("192.168.1.2")
    assert not proxies.is_trusted("203.0.113.9")
    assert not proxies.is_trusted("garbage")
    assert not TrustedProxies([]).is_trusted("10.1.2.3")


def test_repr_lists_networks() -> None:
    assert repr(CidrSet(["10.0.0.0/8", "::1"])) == "CidrSet(['10.0.0.0/8', '::1/128'])"
    assert repr(TrustedProxies(["10.0.0.0/8"])) == "TrustedProxies(['10.0.0.0/8'])"


@pytest.mark.parametrize(("peer", "proxies", "seen"), [
    ("::ffff:203.0.113.9", [], "203.0.113.9"),       # dual-stack socket, no proxies: unmapped
    ("203.0.113.9", [], "203.0.113.9"),
    ("2001:db8::1", [], "2001:db8::1"),
    ("::ffff:not-an-ip", [], "::ffff:not-an-ip"),     # left as it is rather than guessed
    ("::ffff:10.0.0.1", ["10.0.0.0/8"], "10.0.0.1"),  # behind proxies: the parser unmaps too
])
def test_the_stage_gives_one_spelling_of_a_client(peer: str, proxies: list[str], seen: str) -> None:
    got: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(scope["gateway"].client_ip)

    stage = ClientAddressStage(app, TrustedProxies(proxies))
    scope = {"headers": [], "gateway": SimpleNamespace(client_ip=peer)}
    asyncio.run(stage(scope, None, None))  # type: ignore[arg-type]
    assert got == [seen]
