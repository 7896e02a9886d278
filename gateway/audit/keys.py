"""The audit chain's HMAC keys (`GATEWAY_AUDIT_KEY`).

Threat: anyone who can write the audit file can recompute a plain hash chain. With a key they
cannot: every line and every checkpoint carries an HMAC-SHA-256 under a key the gateway and the
verifier hold, and nobody else.

`GATEWAY_AUDIT_KEY` is one key or several, comma-separated, each `kid:secret` (or a bare secret,
whose key id is then derived from it). The first key signs; all of them verify, so a key can be
rotated: put the new one first, keep the old one after it until its lines are archived.
Unset in development: a marked development key (refused when `GATEWAY_ENV=production`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

DEV_AUDIT_KEY = "dev-only-audit-key-change-me-0123456789abcdef"
MIN_KEY_BYTES = 32
_KID = re.compile(r"[A-Za-z0-9._-]{1,32}")
# Domain separation: a line MAC can never be passed off as a checkpoint signature, or back.
LINE = b"gateway-audit-line\x00"
CHECKPOINT = b"gateway-audit-checkpoint\x00"


class AuditKeyError(ValueError):
    """`GATEWAY_AUDIT_KEY` is malformed or too weak."""


@dataclass(frozen=True, slots=True)
class AuditKey:
    kid: str
    secret: bytes

    def __repr__(self) -> str:  # never print the secret
        return f"AuditKey(kid={self.kid!r})"


def derived_kid(secret: bytes) -> str:
    """A key id that names the key without revealing it."""
    return "k" + hmac.new(secret, b"gateway-audit-kid", hashlib.sha256).hexdigest()[:10]


class AuditKeys:
    """The signing key (first) and every key that verifies."""

    def __init__(self, keys: list[AuditKey], *, development: bool = False) -> None:
        if not keys:
            raise AuditKeyError("GATEWAY_AUDIT_KEY: no key")
        self.active = keys[0]
        self.by_kid = {k.kid: k for k in keys}
        if len(self.by_kid) != len(keys):
            raise AuditKeyError("GATEWAY_AUDIT_KEY: the same key id appears twice")
        self.development = development

    @classmethod
    def parse(cls, value: str | None, *, production: bool = False) -> AuditKeys:
        """Keys from the variable's value; the development key when unset outside production."""
        if not value or not value.strip():
            if production:
                raise AuditKeyError("GATEWAY_AUDIT_KEY must be set in production")
            return cls([AuditKey("dev", DEV_AUDIT_KEY.encode())], development=True)
        keys: list[AuditKey] = []
        for n, entry in enumerate((e.strip() for e in value.split(",")), start=1):
            if not entry:
                raise AuditKeyError(f"GATEWAY_AUDIT_KEY: entry {n} is empty")
            kid, sep, secret = entry.partition(":")
            if not sep:
                kid, secret = "", entry
            elif not _KID.fullmatch(kid):
                raise AuditKeyError(f"GATEWAY_AUDIT_KEY: entry {n}: key id must match [A-Za-z0-9._-]{{1,32}}")
            try:
                raw = secret.encode()
            except UnicodeEncodeError:  # bytes that are not UTF-8 in the environment
                raise AuditKeyError(f"GATEWAY_AUDIT_KEY: entry {n} is not UTF-8 text") from None
            if production and (len(raw) < MIN_KEY_BYTES or secret.startswith("dev-only-")):
                raise AuditKeyError(f"GATEWAY_AUDIT_KEY: entry {n} is shorter than {MIN_KEY_BYTES} bytes "
                                    "or a development key; refused in production")
            if not raw:
                raise AuditKeyError(f"GATEWAY_AUDIT_KEY: entry {n} has an empty secret")
            keys.append(AuditKey(kid or derived_kid(raw), raw))
        return cls(keys)

    def sign(self, domain: bytes, body: bytes) -> str:
        return hmac.new(self.active.secret, domain + body, hashlib.sha256).hexdigest()

    def check(self, domain: bytes, body: bytes, kid: str, mac: str) -> bool | None:
        """True / False; None when no key has this id (another key, or a forged id)."""
        key = self.by_kid.get(kid)
        if key is None:
            return None
        good = hmac.new(key.secret, domain + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(good, mac)
