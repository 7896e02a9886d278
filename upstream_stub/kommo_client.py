"""HTTP to Kommo: the OAuth token endpoint and the REST API, paced per account.

Errors (third-party failures are translated here, at one boundary):

    KommoError           transient: network, timeout, 429, 5xx, malformed answer — retry later
    └── ReauthRequired   the grant is dead (revoked or invalid) — a human must reconnect

Neither message ever carries a token, a code or a Kommo response body.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from upstream_stub.kommo_hosts import kommo_host
from upstream_stub.ratelimit import AccountRateLimiter

log = logging.getLogger("upstream_stub.kommo")
REVOKED_HINTS = ("token has been revoked",)


class KommoError(Exception):
    """A Kommo call failed in a way worth retrying later."""


class ReauthRequired(KommoError):
    """The connection's grant no longer works; only a new OAuth consent fixes it."""


@dataclass(frozen=True, slots=True, repr=False)
class TokenPair:
    """An access/refresh token pair; `repr` is masked so it cannot leak into a log."""

    access_token: str
    refresh_token: str | None
    expires_at: float | None

    def __repr__(self) -> str:
        return f"TokenPair(access_token=***, refresh_token=***, expires_at={self.expires_at})"


class _TokenAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    access_token: str = Field(min_length=1, max_length=8192)
    refresh_token: str = Field(min_length=1, max_length=8192)
    expires_in: int = Field(gt=0, le=10 * 365 * 86400)


class KommoHttp:
    """Raw calls to one account host; every call waits its turn at the account's rate limiter."""

    def __init__(self, http: httpx.AsyncClient, limiter: AccountRateLimiter, client_id: str | None,
                 client_secret: str | None, redirect_uri: str | None) -> None:
        self.http = http
        self.limiter = limiter
        self._client = (client_id, client_secret, redirect_uri)

    @property
    def configured(self) -> bool:
        return all(self._client)

    async def _send(self, host: str, method: str, path: str, **kw: Any) -> httpx.Response:
        host = kommo_host(host)  # depth: never send anything to a host outside the allowlist
        await self.limiter.acquire(host)
        try:
            resp = await self.http.request(method, f"https://{host}{path}", **kw)
        except httpx.HTTPError as exc:
            raise KommoError(f"kommo unreachable ({type(exc).__name__})") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise KommoError(f"kommo answered {resp.status_code}")
        return resp

    async def _grant(self, host: str, grant: dict[str, str]) -> TokenPair:
        client_id, client_secret, redirect_uri = self._client
        if not (client_id and client_secret and redirect_uri):
            raise KommoError("kommo integration is not configured")
        body = {"client_id": client_id, "client_secret": client_secret, "redirect_uri": redirect_uri, **grant}
        resp = await self._send(host, "POST", "/oauth2/access_token", json=body)
        if resp.status_code in (400, 401, 403):
            # A refused grant never heals by retrying (bad code, revoked or expired refresh token).
            text = resp.text[:2000].lower()
            why = "revoked" if any(h in text for h in REVOKED_HINTS) else "refused"
            raise ReauthRequired(f"kommo {why} the grant ({resp.status_code})")
        if resp.status_code != 200:
            raise KommoError(f"kommo token endpoint answered {resp.status_code}")
        try:
            ans = _TokenAnswer.model_validate_json(resp.content)
        except ValidationError:
            raise KommoError("kommo token answer is malformed") from None
        return TokenPair(ans.access_token, ans.refresh_token, time.time() + ans.expires_in)

    async def exchange_code(self, host: str, code: str) -> TokenPair:
        return await self._grant(host, {"grant_type": "authorization_code", "code": code})

    async def refresh(self, host: str, refresh_token: str) -> TokenPair:
        return await self._grant(host, {"grant_type": "refresh_token", "refresh_token": refresh_token})

    async def api(self, host: str, access_token: str, path: str,
                  params: dict[str, Any] | None = None) -> httpx.Response:
        """GET an API path (a constant of ours, never a URL from Kommo) with the bearer token."""
        return await self._send(host, "GET", path, params=params,
                                headers={"Authorization": f"Bearer {access_token}"})
