"""AES-256-GCM for secrets at rest, with key ids so keys can be rotated.

Threat: a copy of the database (backup, stolen file, a debug dump) must not yield Kommo tokens or
credentials. Each ciphertext is stored beside the id of the key that sealed it; new writes use the
first (primary) key, older keys only decrypt. The associated data binds a ciphertext to its org and
row, so a blob copied into another org's row does not decrypt.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_KID = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")  # \Z: `$` would take a final newline
_NONCE = 12


class KeyringError(ValueError):
    """The key configuration is unusable; the service refuses to start."""


class DecryptError(Exception):
    """A ciphertext did not authenticate, or its key id is unknown."""


@dataclass(frozen=True, slots=True)
class Sealed:
    """A ciphertext and the id of the key that sealed it."""

    kid: str
    blob: bytes


class Keyring:
    """Named AES-256-GCM keys; the first one seals, all of them open."""

    def __init__(self, spec: str) -> None:
        self._keys: dict[str, AESGCM] = {}
        self.primary = ""
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            kid, sep, b64 = part.partition(":")
            if not sep or not _KID.match(kid):
                raise KeyringError("encryption keys must look like kid:base64[,kid:base64...]")
            if kid in self._keys:
                raise KeyringError(f"encryption key id {kid!r} is listed twice")
            try:
                raw = base64.b64decode(b64.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise KeyringError(f"encryption key {kid!r} is not valid base64") from None
            if len(raw) != 32:
                raise KeyringError(f"encryption key {kid!r} must decode to 32 bytes (AES-256)")
            self._keys[kid] = AESGCM(raw)
            self.primary = self.primary or kid
        if not self._keys:
            raise KeyringError("no encryption key configured (UPSTREAM_ENCRYPTION_KEY)")

    def seal(self, plaintext: bytes, aad: str) -> Sealed:
        nonce = os.urandom(_NONCE)
        ct = self._keys[self.primary].encrypt(nonce, plaintext, aad.encode())
        return Sealed(self.primary, nonce + ct)

    def open(self, sealed: Sealed, aad: str) -> bytes:
        key = self._keys.get(sealed.kid)
        if key is None:
            raise DecryptError(f"unknown key id {sealed.kid!r}")
        try:
            return key.decrypt(sealed.blob[:_NONCE], sealed.blob[_NONCE:], aad.encode())
        except InvalidTag:
            raise DecryptError("ciphertext does not authenticate") from None

    def needs_rewrap(self, sealed: Sealed) -> bool:
        """True when the blob was sealed with an older key and should be re-sealed on next write."""
        return sealed.kid != self.primary
