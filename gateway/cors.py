"""CORS that is safe by construction.

Threat: the upstream reflected any `Origin` with credentials, so any web page could read a
logged-in user's data. Here the allowed origins are parsed and checked once at load (exact
origins or whole-label subdomain wildcards, nothing regex-like), and a request's `Origin` is
allowed only by an exact byte lookup or a label-boundary suffix check on a strictly parsed
`scheme://host[:port]`. Browsers send the canonical form (lowercase, default port omitted), so a
non-canonical `Origin` (uppercase, `:443`, trailing dot, userinfo, path) is never allowed.

Production: pass `context={"production": True}` to `model_validate` and `http://` origins are
refused. A route override (`CorsOverride`) replaces exactly the fields it sets.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gateway.errors import Forbidden

ALWAYS_EXPOSED = ("X-Request-ID", "RateLimit", "RateLimit-Policy", "Retry-After")
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_HOST_CHARS = b"abcdefghijklmnopqrstuvwxyz0123456789.-"
_TOKEN_CHARS = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REGEX_CHARS = set("^$\\()|+{}")
_MAX_ORIGIN = 300


def _parse_origin(raw: str, production: bool) -> tuple[str, str, str]:
    """Validate one configured origin; return (scheme, host, port) with port "" for the default."""
    text = raw.strip().lower()
    if text == "null":
        raise ValueError('"null" is not an allowable origin (sandboxed frames and file:// send it)')
    if any(c in _REGEX_CHARS for c in text) or (".*" in text and ".*." not in text):
        raise ValueError(f"{raw!r} looks like a regular expression; list exact origins or https://*.domain")
    if not raw.isascii():
        raise ValueError(
            f"{raw!r}: write internationalised hosts in punycode (xn--...), as browsers send them"
        )
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS:
        raise ValueError(f"{raw!r}: an origin is http(s)://host[:port]")
    if production and scheme == "http":
        raise ValueError(f"{raw!r}: http:// origins are refused in production")
    if any(c in rest for c in "/?#@"):
        raise ValueError(f"{raw!r}: an origin has no path, query, fragment or userinfo")
    host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
    if port or rest.endswith(":"):
        if not port.isdigit() or not 0 < int(port) < 65536 or port[0] == "0":
            raise ValueError(f"{raw!r}: bad port")
        port = "" if port == _DEFAULT_PORTS[scheme] else port
    labels = host.split(".")
    wildcard = labels[0] == "*"
    check = labels[1:] if wildcard else labels
    if "*" in host and (not wildcard or "*" in ".".join(check)):
        raise ValueError(f"{raw!r}: a wildcard must be the whole leftmost label, as in https://*.example.com")
    if wildcard and len(check) < 2:
        raise ValueError(f"{raw!r}: a wildcard needs a registrable domain under it (https://*.example.com)")
    if (
        not check
        or any(not lab or lab[0] == "-" or lab[-1] == "-" for lab in check)
        or (".".join(check).encode().translate(None, _HOST_CHARS))
    ):
        raise ValueError(
            f"{raw!r}: bad host (letters, digits, '-' and '.' only; no empty label or trailing dot)"
        )
    if production and _placeholder_host(host):
        raise ValueError(f"{raw!r}: example / local origins are refused in production "
                         "(set the real ones in GATEWAY_CORS_ORIGINS, comma-separated)")
    return scheme, host, port


# Documentation and loopback hosts (RFC 2606 / 6761): a shipped placeholder or a developer's
# machine, never the browser app of a production deployment.
_PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net", "example", "localhost", "test",
                        "invalid")


def _placeholder_host(host: str) -> bool:
    bare = host.removeprefix("*.").strip("[]")
    if bare in ("127.0.0.1", "::1", "0.0.0.0") or bare.startswith("127."):
        return True
    return any(bare == d or bare.endswith("." + d) for d in _PLACEHOLDER_DOMAINS)


def _tokens(values: list[str], what: str, *, upper: bool = False) -> list[str]:
    out: list[str] = []
    for v in values:
        v = v.strip()
        if v == "*":
            raise ValueError(f'"*" is not accepted in {what}; list them explicitly')
        if not v or not set(v) <= _TOKEN_CHARS:
            raise ValueError(f"{v!r} is not a valid {what[:-1]} name")
        v = v.upper() if upper else v
        if v.lower() not in (o.lower() for o in out):
            out.append(v)
    return out


class _CorsFields(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("allow_origins", mode="before", check_fields=False)
    @classmethod
    def _comma_separated(cls, v: object) -> object:
        # `allow_origins: ${GATEWAY_CORS_ORIGINS}` expands to one comma-separated string.
        if isinstance(v, str):
            return [o.strip() for o in v.split(",") if o.strip()]
        return v

    @field_validator("allow_origins", mode="after", check_fields=False)
    @classmethod
    def _origins(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if v is None:
            return v
        production = bool((info.context or {}).get("production"))
        if "*" in (o.strip() for o in v):
            if len(v) != 1:
                raise ValueError('"*" must be the only entry of allow_origins')
            return ["*"]
        out: list[str] = []
        for raw in v:
            scheme, host, port = _parse_origin(raw, production)
            norm = f"{scheme}://{host}" + (f":{port}" if port else "")
            if norm not in out:
                out.append(norm)
        return out

    @field_validator("allow_methods", mode="after", check_fields=False)
    @classmethod
    def _methods(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _tokens(v, "allow_methods", upper=True)

    @field_validator("allow_headers", "expose_headers", mode="after", check_fields=False)
    @classmethod
    def _headers(cls, v: list[str] | None, info: ValidationInfo) -> list[str] | None:
        return None if v is None else _tokens(v, str(info.field_name))


class CorsPolicy(_CorsFields):
    """The global CORS policy (`cors:` in policy); origins are validated and normalised at load."""

    allow_origins: list[str]
    allow_credentials: bool = False
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "HEAD", "POST"])
    allow_headers: list[str] = Field(default_factory=lambda: ["Authorization", "Content-Type"])
    expose_headers: list[str] = Field(default_factory=list)
    max_age: int = Field(default=600, ge=0, le=86400)

    @model_validator(mode="after")
    def _coherent(self) -> CorsPolicy:
        # Browsers refuse `*` with credentials; reflecting instead would re-open the original hole.
        if self.allow_credentials and self.allow_origins == ["*"]:
            raise ValueError('allow_origins "*" cannot be combined with allow_credentials: true')
        return self

    def merged(self, override: CorsOverride | None) -> CorsPolicy:
        """This policy with the fields the route override sets replaced (validated again)."""
        if override is None:
            return self
        data = self.model_dump() | override.model_dump(exclude_unset=True)
        return CorsPolicy.model_validate(data)


class CorsOverride(_CorsFields):
    """A route's `cors:` block: every field optional; a set field replaces the global one."""

    allow_origins: list[str] | None = None
    allow_credentials: bool | None = None
    allow_methods: list[str] | None = None
    allow_headers: list[str] | None = None
    expose_headers: list[str] | None = None
    max_age: int | None = Field(default=None, ge=0, le=86400)


def _origin_host(origin: bytes, scheme_port: dict[bytes, bytes]) -> tuple[bytes, bytes, bytes] | None:
    """Strictly split an incoming Origin into (scheme, host, port); None unless canonical."""
    scheme, sep, rest = origin.partition(b"://")
    if not sep or scheme not in scheme_port:
        return None
    host, sep, port = rest.partition(b":")
    if sep and (not port.isdigit() or port[:1] == b"0" or port == scheme_port[scheme] or len(port) > 5):
        return None
    if (
        not host
        or host.translate(None, _HOST_CHARS)
        or host[:1] == b"."
        or host[-1:] == b"."
        or b".." in host
    ):
        return None
    return scheme, host, port


class CorsMatcher:
    """A compiled CORS policy: decides per request with set lookups and suffix checks only."""

    def __init__(self, policy: CorsPolicy) -> None:
        self.policy = policy
        self._any = policy.allow_origins == ["*"]
        self._exact: set[bytes] = set()
        # (scheme, ".suffix", port) for https://*.example.com entries
        self._wild: list[tuple[bytes, bytes, bytes]] = []
        for o in [] if self._any else policy.allow_origins:
            scheme, _, rest = o.partition("://")
            if rest.startswith("*."):
                host, _, port = rest[1:].partition(":")
                self._wild.append((scheme.encode(), host.encode(), port.encode()))
            else:
                self._exact.add(o.encode())
        self._ports = {b"http": b"80", b"https": b"443"}
        self._methods = {m.encode() for m in policy.allow_methods}
        self._headers = {h.lower().encode() for h in policy.allow_headers}
        expose = list(policy.expose_headers)
        expose += [h for h in ALWAYS_EXPOSED if h.lower() not in {e.lower() for e in expose}]
        self._vary = (b"vary", b"Origin")
        self._common: list[tuple[bytes, bytes]] = []
        if policy.allow_credentials:
            self._common.append((b"access-control-allow-credentials", b"true"))
        self._actual = [*self._common, (b"access-control-expose-headers", ", ".join(expose).encode())]
        self._preflight = [
            *self._common,
            (b"access-control-allow-methods", ", ".join(policy.allow_methods).encode()),
            (b"access-control-max-age", str(policy.max_age).encode()),
        ]
        if policy.allow_headers:
            self._preflight.append(
                (b"access-control-allow-headers", ", ".join(policy.allow_headers).encode())
            )

    def origin_allowed(self, origin: bytes | None) -> bool:
        if not origin or len(origin) > _MAX_ORIGIN:
            return False
        if self._any or origin in self._exact:
            return True
        if not self._wild:
            return False
        parts = _origin_host(origin, self._ports)
        if parts is None:
            return False
        scheme, host, port = parts
        # suffix starts with "." so the match is on a label boundary (never evil-example.com)
        return any(s == scheme and p == port and host.endswith(sfx) for s, sfx, p in self._wild)

    def _allow_origin(self, origin: bytes) -> tuple[bytes, bytes]:
        return (b"access-control-allow-origin", b"*" if self._any else origin)

    def actual_headers(self, origin: bytes | None) -> list[tuple[bytes, bytes]]:
        """Headers for a non-preflight response: allow headers only for an allowed origin."""
        if origin is not None and self.origin_allowed(origin):
            return [self._vary, self._allow_origin(origin), *self._actual]
        return [self._vary]

    def preflight(
        self, origin: bytes, method: bytes, request_headers: bytes | None
    ) -> list[tuple[bytes, bytes]]:
        """Headers of the 204 answer to a preflight; raises Forbidden (cors.*) to refuse it."""
        vary = {"Vary": "Origin"}
        if not self.origin_allowed(origin):
            raise Forbidden("cors.origin_denied", "origin not allowed", headers=vary)
        if method not in self._methods:
            raise Forbidden("cors.method_denied", "method not allowed by CORS policy", headers=vary)
        if request_headers:
            for name in request_headers.split(b","):
                name = name.strip().lower()
                if name and name not in self._headers:
                    raise Forbidden(
                        "cors.header_denied", "request header not allowed by CORS policy", headers=vary
                    )
        return [self._vary, self._allow_origin(origin), *self._preflight]


def compile_cors(policy: CorsPolicy, override: CorsOverride | None = None) -> CorsMatcher:
    """Compile the global policy, merged with a route's override, into a matcher."""
    return CorsMatcher(policy.merged(override))


def load_cors(data: Any, *, production: bool = False) -> CorsPolicy:
    """Validate a `cors:` mapping; `production` refuses http:// origins."""
    return CorsPolicy.model_validate(data, context={"production": production})
