"""Rate-limit policy: what is limited (`limits` strings), per what key, with which strategy.

Validated once at load; `compile_policy` turns a route's policy into `limits` items (and the
per-replica items used while Redis is unreachable) plus the precomputed `RateLimit-Policy` header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from limits import RateLimitItem, parse, parse_many
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KeyPart = Literal["ip", "sub", "org", "route"]
KeyName = Literal["ip", "sub", "org", "sub+org", "ip+sub", "route"]
Strategy = Literal["moving-window", "sliding-window-counter", "fixed-window"]
NAMESPACE = "gw"


def _parse_limits(value: str) -> list[RateLimitItem]:
    try:
        items = parse_many(value)
    except ValueError:
        raise ValueError(
            f'cannot parse rate limit {value!r} (expected e.g. "10/second; 300/15 minutes")'
        ) from None
    for item in items:
        if item.amount < 1:
            raise ValueError(
                f"rate limit {value!r}: an amount of 0 denies everything; remove the route instead"
            )
    return items


class RateLimitPolicy(BaseModel):
    """A route's limits. `key` is one of the named keys or a list of parts (`[sub, org]`).

    `route` alone is one budget shared by every client of the route; `sub`/`org` on a request
    without that claim falls back to the client IP, so anonymous callers are still limited.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    limits: str
    key: KeyName | list[KeyPart] = "ip"
    strategy: Strategy = "moving-window"
    enforce: bool = True

    @field_validator("limits")
    @classmethod
    def _limits(cls, v: str) -> str:
        _parse_limits(v)
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list):
            if not v or len(set(v)) != len(v):
                raise ValueError("key parts must be a non-empty list without duplicates")
            if "route" in v and len(v) > 1:
                raise ValueError('"route" is a key on its own (one budget for the whole route)')
        return v

    def key_parts(self) -> tuple[str, ...]:
        return tuple(self.key.split("+")) if isinstance(self.key, str) else tuple(self.key)


class BruteForcePolicy(BaseModel):
    """Failed verifications per client IP: `max_failures` in `window` block it for `cooldown_seconds`.

    A block refuses further *failing* attempts; valid tokens from a blocked address are still
    verified and served, at most `verifications_per_second` of them per address and replica (the
    CPU an attacker behind that address can make us spend on signatures).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_failures: int = Field(default=30, ge=1)
    window: str = "1 minute"
    cooldown_seconds: int = Field(default=60, ge=1, le=86400)
    verifications_per_second: int = Field(default=20, ge=1, le=100_000)

    @model_validator(mode="after")
    def _window(self) -> BruteForcePolicy:
        try:
            parse(f"{self.max_failures}/{self.window}")
        except ValueError:
            raise ValueError(
                f'brute_force.window {self.window!r} is not a window such as "1 minute"'
            ) from None
        return self

    def item(self, replicas: int = 1) -> RateLimitItem:
        amount = max(1, math.ceil(self.max_failures / replicas))
        parsed = parse(f"{amount}/{self.window}")
        return type(parsed)(amount, parsed.multiples, NAMESPACE)


class RateLimitSettings(BaseModel):
    """Global rate-limit settings: route default, Redis-failure policy, replica count, brute force."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: RateLimitPolicy | None = None
    on_storage_error: Literal["local", "open", "closed"] = "local"
    # Replicas sharing one Redis; while Redis is down each replica allows limit/replicas.
    replicas: int = Field(default=1, ge=1, le=1000)
    brute_force: BruteForcePolicy = Field(default_factory=BruteForcePolicy)
    # Failed webhook verifications (bad signature or token, stale timestamp) per source address:
    # over the threshold the address is refused before its body is read or any HMAC computed.
    webhook_brute_force: BruteForcePolicy = Field(
        default_factory=lambda: BruteForcePolicy(max_failures=20, window="1 minute", cooldown_seconds=60))
    # Upper bound of in-process per-key entries, per table (counters, moving windows, brute-force
    # blocks, verification budgets, last-known Redis counts); least recently used go first,
    # counted. About 200-250 bytes an entry (README, "Limits under abuse").
    max_tracked_keys: int = Field(default=200_000, ge=100, le=50_000_000)
    # Upper bound of one storage round trip; a dead Redis must cost at most this, then we degrade.
    storage_timeout: float = Field(default=0.25, gt=0, le=5)


@dataclass(frozen=True, slots=True)
class CompiledRateLimit:
    """A policy ready for `RateLimiter.hit`: items, local items, key parts, header values."""

    name: str
    strategy: Strategy
    key: tuple[str, ...]
    enforce: bool
    items: tuple[RateLimitItem, ...]
    local_items: tuple[RateLimitItem, ...]
    item_names: tuple[bytes, ...]
    policy_header: bytes
    local_policy_header: bytes
    # Keyed by the client address alone: applied before the body is read and before any token or
    # signature work (the address is known then; `sub` and `org` are not).
    by_address: bool = False
    # Fixed window on the lean Redis client: per item, the key around the request's identifiers
    # and the item's three commands as RESP with holes for the key (`resp_templates`).
    resp_templates: tuple[tuple[str, str, bytes], ...] = ()


def resp_templates(items: tuple[RateLimitItem, ...]) -> tuple[tuple[str, str, bytes], ...]:
    """Per item: (`namespace/`, `/amount/multiples/GRANULARITY`, the RESP of `SET key 0 EX <window>
    NX`, `INCR key`, `TTL key` with `$<len>\r\n<key>` holes), so that `limits`' key
    `prefix:` + `item.key_for(*ids)` and the commands take one format per item on the request path."""
    out = []
    for item in items:
        head, tail = item.key_for("\0").split("\0")
        window = b"%d" % item.get_expiry()
        tmpl = (b"*6\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\n0\r\n$2\r\nEX\r\n$" + b"%d" % len(window)
                + b"\r\n" + window + b"\r\n$2\r\nNX\r\n"
                + b"*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n*2\r\n$3\r\nTTL\r\n$%d\r\n%s\r\n")
        out.append((head, tail, tmpl))
    return tuple(out)


def _sf_name(text: str) -> str:
    # The name is an RFC 8941 sf-string: printable ASCII without '"' or '\'.
    return "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in text) or "default"


def compile_policy(policy: RateLimitPolicy, name: str, replicas: int = 1) -> CompiledRateLimit:
    """Compile `policy` (named `name`, usually the route id or "default") for `replicas` replicas."""
    parsed = _parse_limits(policy.limits)
    items = tuple(type(i)(i.amount, i.multiples, NAMESPACE) for i in parsed)
    local = tuple(type(i)(max(1, math.ceil(i.amount / replicas)), i.multiples, NAMESPACE) for i in parsed)
    base = _sf_name(name)
    names: list[str] = []
    for idx, item in enumerate(items):
        n = base if len(items) == 1 else f"{base}-{item.get_expiry()}s"
        names.append(n if n not in names else f"{n}-{idx}")

    def header(its: tuple[RateLimitItem, ...]) -> bytes:
        return ", ".join(
            f'"{n}";q={i.amount};w={i.get_expiry()}' for n, i in zip(names, its, strict=True)
        ).encode()

    return CompiledRateLimit(
        name=base,
        strategy=policy.strategy,
        key=policy.key_parts(),
        enforce=policy.enforce,
        items=items,
        local_items=local,
        item_names=tuple(n.encode() for n in names),
        policy_header=header(items),
        local_policy_header=header(local),
        by_address=policy.key_parts() == ("ip",),
        resp_templates=resp_templates(items) if policy.strategy == "fixed-window" else (),
    )
