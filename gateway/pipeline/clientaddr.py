"""Client address: the one trusted-proxy model every later stage uses.

Rate-limit keys, webhook source allowlists and the audit record all read `ctx.client_ip`, set here
and nowhere else. Threat: a client that writes its own `X-Forwarded-For` to pick its rate-limit
bucket or to pass an IP allowlist; see `gateway.clientaddr.TrustedProxies`.
"""

from __future__ import annotations

from gateway.clientaddr import TrustedProxies, parse_address
from gateway.context import RequestContext
from gateway.pipeline.base import ASGIApp, Receive, Scope, Send


class ClientAddressStage:
    """Sets `ctx.client_ip` from the peer address and, behind trusted proxies, X-Forwarded-For."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies
        self.enabled = bool(proxies.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope["gateway"]
        if self.enabled:
            xff = [v for k, v in scope["headers"] if k == b"x-forwarded-for"]
            ctx.client_ip = self.proxies.client_ip(ctx.client_ip, xff)
        elif ctx.client_ip.startswith("::ffff:"):
            # An IPv4 client on a dual-stack socket: one spelling of one client for rate-limit
            # keys, allowlists and the audit record, as behind proxies.
            ip = parse_address(ctx.client_ip)
            if ip is not None:
                ctx.client_ip = str(ip)
        await self.app(scope, receive, send)
