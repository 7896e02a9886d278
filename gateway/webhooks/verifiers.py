"""Webhook verifiers: one per scheme, compiled once from the route's `webhook:` section.

Threats: a forged delivery (no or wrong signature/token), a replayed old one (Standard Webhooks
timestamps), and timing side channels on the comparison. Every comparison is constant-time
(`hmac.compare_digest`), every refusal is `Unauthorized` with a stable reason and a detail that
never echoes the secret, the token or the signature. Ambiguity is a refusal: a signature header
or query parameter that appears twice is treated as a bad signature, never "pick one".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import parse_qsl

from gateway.errors import Unauthorized
from gateway.settings import DEV_MARKER
from gateway.webhooks.config import (
    HmacWebhook,
    KommoRevokedWebhook,
    StandardWebhooksWebhook,
    UrlTokenWebhook,
    WebhookConfig,
)
from gateway.webhooks.errors import WebhookConfigError

MIN_WEBHOOK_SECRET_BYTES = 16
_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

Headers = list[tuple[bytes, bytes]]


class Verifier(Protocol):
    """Checks one delivery; returns the scheme's delivery id (or None) or raises Unauthorized."""

    scheme: str

    def verify(
        self, *, path_params: dict[str, str], headers: Headers, query: str, body: bytes, now: float
    ) -> str | None: ...


def _bad(detail: str) -> Unauthorized:
    return Unauthorized("webhook.bad_signature", detail)


def _single_header(headers: Headers, name: bytes) -> bytes | None:
    found: bytes | None = None
    for key, value in headers:
        if key == name:
            if found is not None:
                raise _bad(f"{name.decode()} header repeated")
            found = value
    return found


def _secret(env: Mapping[str, str], variable: str, production: bool) -> str:
    """The secret's value; refuses unset, empty, and (in production) dev defaults and short keys."""
    value = env.get(variable, "")
    if not value:
        raise WebhookConfigError(variable, f"{variable} is unset or empty; a webhook needs its secret")
    if production and value.startswith(DEV_MARKER):
        raise WebhookConfigError(variable, f"{variable} is a development default; refused in production")
    if production and len(value.encode()) < MIN_WEBHOOK_SECRET_BYTES:
        raise WebhookConfigError(
            variable, f"{variable} is shorter than {MIN_WEBHOOK_SECRET_BYTES} bytes; refused in production"
        )
    return value


class UrlTokenVerifier:
    """The path parameter `param` must equal the secret token."""

    scheme = "url_token"
    __slots__ = ("_param", "_digest", "variable")

    def __init__(self, param: str, token: str, variable: str) -> None:
        self._param = param
        self.variable = variable
        # Compare digests, not the tokens: equal lengths, so not even the length leaks.
        self._digest = hashlib.sha256(token.encode()).digest()

    def verify(
        self, *, path_params: dict[str, str], headers: Headers, query: str, body: bytes, now: float
    ) -> str | None:
        given = path_params.get(self._param)
        # surrogatepass: a router may hand over undecodable bytes as surrogates; refuse, not crash.
        digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest() if given is not None else b""
        if not hmac.compare_digest(digest, self._digest):
            raise _bad("webhook token does not match")
        return None

    def __repr__(self) -> str:
        return f"UrlTokenVerifier(param={self._param!r}, secret=${self.variable})"


class HmacVerifier:
    """`header` carries `prefix` + hex/base64 HMAC of the raw body."""

    scheme = "hmac"
    __slots__ = ("_key", "_header", "_display", "_digestmod", "_encoding", "_prefix", "variable")

    def __init__(self, cfg: HmacWebhook, key: bytes, variable: str) -> None:
        self._key = key
        self._display = cfg.header
        self._header = cfg.header.lower().encode("ascii")
        self._digestmod = cfg.algorithm
        self._encoding = cfg.encoding
        self._prefix = cfg.prefix.encode()
        self.variable = variable

    def verify(
        self, *, path_params: dict[str, str], headers: Headers, query: str, body: bytes, now: float
    ) -> str | None:
        raw = _single_header(headers, self._header)
        if raw is None:
            raise _bad(f"missing {self._display} header")
        raw = raw.strip()
        if not raw.startswith(self._prefix):
            raise _bad(f"malformed {self._display} header")
        try:
            given = _decode(raw[len(self._prefix) :], self._encoding)
        except ValueError:
            raise _bad(f"malformed {self._display} header") from None
        expected = hmac.new(self._key, body, self._digestmod).digest()
        if not hmac.compare_digest(given, expected):
            raise _bad("signature does not match")
        return None

    def __repr__(self) -> str:
        return f"HmacVerifier(header={self._display!r}, {self._digestmod}, secret=${self.variable})"


def _decode(text: bytes, encoding: str) -> bytes:
    try:
        if encoding == "hex":
            return bytes.fromhex(text.decode("ascii"))
        return base64.b64decode(text, validate=True)
    except (UnicodeDecodeError, binascii.Error) as exc:
        raise ValueError("undecodable signature") from exc


class StandardWebhooksVerifier:
    """Standard Webhooks: HMAC-SHA256 of `{id}.{timestamp}.{body}`, `v1,<b64>` signatures."""

    scheme = "standard_webhooks"
    __slots__ = ("_key", "_tolerance", "variable")

    def __init__(self, key: bytes, tolerance: int, variable: str) -> None:
        self._key = key
        self._tolerance = tolerance
        self.variable = variable

    def verify(
        self, *, path_params: dict[str, str], headers: Headers, query: str, body: bytes, now: float
    ) -> str | None:
        msg_id = _single_header(headers, b"webhook-id")
        stamp = _single_header(headers, b"webhook-timestamp")
        sigs = _single_header(headers, b"webhook-signature")
        if not msg_id or stamp is None or sigs is None:
            raise _bad("missing webhook-id, webhook-timestamp or webhook-signature header")
        stamp = stamp.strip()
        if not stamp.isdigit() or len(stamp) > 12:
            raise _bad("malformed webhook-timestamp header")
        expected = hmac.new(self._key, b"%s.%s.%s" % (msg_id, stamp, body), hashlib.sha256).digest()
        matched = False
        # Several signatures, space-separated, for key rotation: any v1 match passes; other
        # versions are ignored (not failed) so a sender may add schemes we do not know yet.
        for part in sigs.split():
            version, _, value = part.partition(b",")
            if version != b"v1":
                continue
            try:
                candidate = base64.b64decode(value, validate=True)
            except binascii.Error:
                continue
            matched |= hmac.compare_digest(candidate, expected)
        if not matched:
            raise _bad("signature does not match")
        # Freshness after authenticity: "stale" then means a genuine but old (or future) message.
        if abs(now - int(stamp)) > self._tolerance:
            raise Unauthorized("webhook.stale", "webhook timestamp outside the accepted window")
        try:
            return msg_id.decode("ascii")
        except UnicodeDecodeError:
            raise _bad("malformed webhook-id header") from None

    def __repr__(self) -> str:
        return f"StandardWebhooksVerifier(tolerance={self._tolerance}, secret=${self.variable})"


def _whsec_key(value: str, variable: str) -> bytes:
    raw = value[len("whsec_") :] if value.startswith("whsec_") else value
    try:
        return base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise WebhookConfigError(variable, f"{variable} is not a whsec_<base64> secret") from None


class KommoRevokedVerifier:
    """Kommo access-revoked GET: `client_uuid`, `account_id`, `signature` in the query."""

    scheme = "kommo_revoked"
    # Each exactly once, or 401; the OpenAPI generator declares these (gateway/openapi/generate.py).
    QUERY = ("client_uuid", "account_id", "signature")
    __slots__ = ("_client_id", "_secret", "variable")

    def __init__(self, client_id: str, client_secret: str, variable: str) -> None:
        self._client_id = client_id.encode()
        self._secret = client_secret.encode()
        self.variable = variable

    def verify(
        self, *, path_params: dict[str, str], headers: Headers, query: str, body: bytes, now: float
    ) -> str | None:
        wanted: dict[str, list[str]] = {name: [] for name in self.QUERY}
        try:
            pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=32)
        except ValueError:
            raise _bad("malformed query string") from None
        for key, value in pairs:
            if key in wanted:
                wanted[key].append(value)
        if any(len(v) != 1 for v in wanted.values()):
            raise _bad("client_uuid, account_id and signature must each appear exactly once")
        client_uuid, account_id, signature = (v[0] for v in wanted.values())
        if not account_id or not hmac.compare_digest(client_uuid.encode(), self._client_id):
            raise _bad("not signed for this integration")
        try:
            given = bytes.fromhex(signature)
        except ValueError:
            raise _bad("malformed signature") from None
        expected = hmac.new(self._secret, self._client_id + b"|" + account_id.encode(), hashlib.sha256)
        if not hmac.compare_digest(given, expected.digest()):
            raise _bad("signature does not match")
        # No delivery id in this scheme; the account is what the event is about. Returned so an
        # empty GET body does not make every revocation of the route share one dedupe key.
        return f"revoked:{account_id}"

    def __repr__(self) -> str:
        return f"KommoRevokedVerifier(secret=${self.variable})"


def compile_verifier(cfg: WebhookConfig, env: Mapping[str, str], production: bool) -> Verifier:
    """Build the verifier of one route; raises WebhookConfigError naming the variable at fault."""
    if isinstance(cfg, UrlTokenWebhook):
        token = _secret(env, cfg.secret_env, production)
        if not set(token) <= _URL_SAFE:
            raise WebhookConfigError(
                cfg.secret_env,
                f"{cfg.secret_env} must contain only URL-safe characters (A-Z a-z 0-9 - . _ ~)",
            )
        return UrlTokenVerifier(cfg.param, token, cfg.secret_env)
    if isinstance(cfg, HmacWebhook):
        return HmacVerifier(cfg, _secret(env, cfg.secret_env, production).encode(), cfg.secret_env)
    if isinstance(cfg, StandardWebhooksWebhook):
        key = _whsec_key(_secret(env, cfg.secret_env, production), cfg.secret_env)
        if production and len(key) < MIN_WEBHOOK_SECRET_BYTES:
            raise WebhookConfigError(
                cfg.secret_env,
                f"{cfg.secret_env} decodes to fewer than {MIN_WEBHOOK_SECRET_BYTES} bytes;"
                " refused in production",
            )
        if not key:
            raise WebhookConfigError(cfg.secret_env, f"{cfg.secret_env} decodes to an empty key")
        return StandardWebhooksVerifier(key, cfg.tolerance_seconds, cfg.secret_env)
    if isinstance(cfg, KommoRevokedWebhook):
        client_id = env.get(cfg.client_id_env, "")
        if not client_id:
            raise WebhookConfigError(cfg.client_id_env, f"{cfg.client_id_env} is unset or empty")
        secret = _secret(env, cfg.client_secret_env, production)
        return KommoRevokedVerifier(client_id, secret, cfg.client_secret_env)
    raise TypeError(f"unknown webhook config {type(cfg).__name__}")
