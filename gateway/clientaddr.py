"""The client address: one trusted-proxy model for the whole gateway (pipeline stage 2, docs/architecture.md).

Threat: `X-Forwarded-For` is written by whoever sent the request. Believing it from anyone lets a
client pick its own address, and with it its rate-limit key, its place in a webhook's
`source_ips` and its line in the audit log. So the header is read only when the TCP peer is a
proxy we trust, and then only as far as the chain of trusted proxies goes: walking right to left
(the rightmost entry was appended by the proxy closest to us), the first address that is not a
trusted proxy is the client. Everything left of it was written by the client and is ignored, as
Werkzeug's `ProxyFix` does with its hop count; here trust is by CIDR, not by count.

A malformed entry stops the walk and the last trusted hop is used: we never believe garbage, and
never skip past it to an address the client may have planted further left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_CACHE_SIZE = 4096


def parse_network(text: str) -> IPNetwork:
    """One CIDR (`10.0.0.0/8`, `2001:db8::/32`) or bare address (taken as /32 or /128).

    Host bits set (`10.0.0.1/8`) is refused rather than guessed at: the operator may have meant
    one host or the whole block, and trusting the wrong one is a security bug.
    """
    value = text.strip()
    if not value:
        raise ValueError("empty CIDR")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(value, strict=False)
            raise ValueError(f'invalid CIDR "{value}": host bits set (did you mean "{loose}"?)') from None
        raise ValueError(f'invalid CIDR "{value}": not an IPv4/IPv6 address or network') from None


def parse_address(text: str) -> IPAddress | None:
    """An address as sockets and proxies write it, or None when it is not one.

    Accepts `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443` and `1.2.3.4:80`
    (RFC 7239 node syntax, which some proxies use in X-Forwarded-For). IPv4-mapped IPv6
    (`::ffff:1.2.3.4`, what dual-stack sockets report) is unmapped so one client has one address.
    """
    value = text.strip()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :] if end > 0 else "x"
        # isascii: str.isdigit() is also true of '²' and '٣' (a latin-1 header can carry '²').
        if rest and not (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit()):
            return None
        value = value[1:end]
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
        if not (port.isascii() and port.isdigit()):
            return None
        value = host
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class CidrSet:
    """A fixed set of networks, parsed once; membership of address strings is cached."""

    __slots__ = ("networks", "_lookup")

    def __init__(self, cidrs: Iterable[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(parse_network(c) for c in cidrs)
        v4 = tuple(n for n in self.networks if n.version == 4)
        v6 = tuple(n for n in self.networks if n.version == 6)

        # Per instance, so a reload builds a fresh cache. Bounded: addresses come from clients.
        @lru_cache(maxsize=_CACHE_SIZE)
        def lookup(text: str) -> tuple[str | None, bool]:
            ip = parse_address(text)
            if ip is None:
                return None, False
            nets = v4 if ip.version == 4 else v6
            return str(ip), any(ip in n for n in nets)

        self._lookup = lookup

    def classify(self, text: str) -> tuple[str | None, bool]:
        """(normalised address or None when malformed, whether it is inside the set)."""
        return self._lookup(text)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and self._lookup(text)[1]

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"CidrSet({[str(n) for n in self.networks]!r})"


class TrustedProxies:
    """Proxies whose `X-Forwarded-For` is believed; finds the client address of a request."""

    __slots__ = ("_set",)

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._set = CidrSet(cidrs)

    @classmethod
    def from_env(cls, value: str) -> TrustedProxies:
        """From `GATEWAY_TRUSTED_PROXIES`: CIDRs separated by commas and/or whitespace."""
        return cls(part for part in value.replace(",", " ").split())

    @property
    def networks(self) -> tuple[IPNetwork, ...]:
        return self._set.networks

    def is_trusted(self, address: str) -> bool:
        return address in self._set

    def client_ip(self, peer: str, xff_values: list[bytes]) -> str:
        """The client address, from the TCP peer and every `X-Forwarded-For` header line.

        Several header lines are one comma-separated list, in order (RFC 9110 §5.3).
        """
        lookup = self._set.classify
        # Also with no proxies configured: the peer comes back normalised (`::ffff:1.2.3.4` as
        # 1.2.3.4), as it does when the peer is simply not one of the proxies.
        current, trusted = lookup(peer)
        if not trusted:
            # An untrusted peer's headers change nothing (it could have written them itself).
            return current or peer
        if not xff_values:
            return current or peer
        joined = b",".join(xff_values).decode("latin-1")
        for entry in reversed(joined.split(",")):
            address, trusted = lookup(entry)
            if address is None:
                break  # garbage: stay with the last trusted hop
            current = address
            if not trusted:
                return address
        # Every entry walked was a trusted proxy (or the walk hit garbage): the leftmost
        # trusted hop we reached is the best address we can vouch for.
        return current or peer

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self._set.networks]!r})"
