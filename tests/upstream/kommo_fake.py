"""A fake Kommo account behind respx: OAuth grants with rotating refresh tokens, leads, account info.

It behaves like the real thing in the ways that matter here: each refresh issues a new pair and kills
the old refresh token; API calls with anything but the current access token get 401; a revoked grant
answers `Token has been revoked`.
"""

from __future__ import annotations

import json
import secrets
import time

import httpx
import respx

HOST = "acme.kommo.com"
ACCOUNT_ID = 31337
AMOJO_ID = "amojo-acme-0001"


class FakeKommo:
    """State of one Kommo account; `install(router)` wires its routes into a respx router."""

    def __init__(self, host: str = HOST, leads: int = 3) -> None:
        self.host = host
        self.code = "auth-code-" + secrets.token_hex(8)
        self.access: str | None = None
        self.refresh: str | None = None
        self.revoked = False
        self.expires_in = 86400
        self.grants = 0
        self.refreshes = 0
        self.calls: list[float] = []  # monotonic time of every request this account received
        self.all_tokens: list[str] = [self.code]
        self.leads = [{"id": 1000 + i, "name": f"Lead {i}", "status_id": 142, "pipeline_id": 7,
                       "price": i * 10} for i in range(leads)]
        self.page_size = 250
        self.force_401 = 0  # answer 401 to the next N API calls regardless of token

    def _issue(self) -> httpx.Response:
        self.access = "kommo-access-" + secrets.token_hex(12)
        self.refresh = "kommo-refresh-" + secrets.token_hex(12)
        self.all_tokens += [self.access, self.refresh]
        return httpx.Response(200, json={"token_type": "Bearer", "expires_in": self.expires_in,
                                         "access_token": self.access, "refresh_token": self.refresh})

    def token_endpoint(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(time.monotonic())
        body = json.loads(request.content)
        if body.get("client_secret") != "kommo-client-secret-xyz":
            return httpx.Response(401, json={"hint": "Client authentication failed"})
        if body["grant_type"] == "authorization_code":
            if body.get("code") != self.code:
                return httpx.Response(400, json={"hint": "Authorization code has expired", "status": 400})
            self.grants += 1
            return self._issue()
        self.refreshes += 1
        if self.revoked:
            return httpx.Response(400, json={"title": "Bad Request", "hint": "Token has been revoked",
                                             "status": 400})
        if body.get("refresh_token") != self.refresh:
            return httpx.Response(400, json={"hint": "Token has been revoked", "status": 400})
        return self._issue()

    def _authorised(self, request: httpx.Request) -> bool:
        self.calls.append(time.monotonic())
        if self.force_401 > 0:
            self.force_401 -= 1
            return False
        return self.access is not None and request.headers.get("authorization") == f"Bearer {self.access}"

    def account(self, request: httpx.Request) -> httpx.Response:
        if not self._authorised(request):
            return httpx.Response(401, json={"title": "Unauthorized"})
        return httpx.Response(200, json={"id": ACCOUNT_ID, "name": "Acme", "subdomain": "acme",
                                         "amojo_id": AMOJO_ID})

    def leads_page(self, request: httpx.Request) -> httpx.Response:
        if not self._authorised(request):
            return httpx.Response(401, json={"title": "Unauthorized"})
        page = int(request.url.params.get("page", "1"))
        chunk = self.leads[(page - 1) * self.page_size: page * self.page_size]
        if not chunk:
            return httpx.Response(204)
        links = {"self": {"href": str(request.url)}}
        if page * self.page_size < len(self.leads):
            links["next"] = {"href": f"https://{self.host}/api/v4/leads?page={page + 1}"}
        return httpx.Response(200, json={"_page": page, "_links": links, "_embedded": {"leads": chunk}})

    def install(self, router: respx.MockRouter) -> FakeKommo:
        base = f"https://{self.host}"
        router.post(f"{base}/oauth2/access_token").mock(side_effect=self.token_endpoint)
        router.get(f"{base}/api/v4/account").mock(side_effect=self.account)
        router.get(f"{base}/api/v4/leads").mock(side_effect=self.leads_page)
        return self
