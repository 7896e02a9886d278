"""Which hosts may receive a Kommo OAuth code or token: a strict allowlist.

Threat (SSRF and token theft): the account host comes from the OAuth callback's `referer` parameter
and from connection settings, i.e. from the outside. Anything we would send a code, a client secret
or a token to must be exactly `<one label>.kommo.com`, `.amocrm.ru` or `.amocrm.com` — no port, no
userinfo, no path tricks, no IP literals, no extra labels.
"""

from __future__ import annotations

import re

from upstream_stub.errors import BadRequest

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ALLOWED = re.compile(rf"^{_LABEL}\.(?:kommo\.com|amocrm\.ru|amocrm\.com)$")
_RESERVED = frozenset({"www", "api", "oauth"})


def kommo_host(raw: str) -> str:
    """The normalised account host, or `BadRequest("kommo.bad_host")`.

    Accepts `acme.kommo.com` and `https://acme.kommo.com` (with at most a trailing slash): the two
    forms Kommo sends.
    """
    value = raw.strip().lower()
    if value.startswith("https://"):
        value = value[len("https://"):]
    value = value.removesuffix("/")
    if len(value) > 253 or not _ALLOWED.fullmatch(value) or value.split(".")[0] in _RESERVED:
        raise BadRequest("kommo.bad_host", "account host is not a Kommo host")
    return value


def is_kommo_host(raw: str) -> bool:
    try:
        kommo_host(raw)
    except BadRequest:
        return False
    return True
