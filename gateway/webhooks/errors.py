"""Errors of the webhook core.

    ValueError
    └── WebhookConfigError            start-up: a secret is unset, empty, a dev default or weak
    ServiceUnavailable (503)
    └── DedupeStoreUnavailable        request: the replay store (Redis) did not answer

Request-time refusals are the gateway's own typed errors: `Unauthorized("webhook.bad_signature")`,
`Unauthorized("webhook.stale")`, `Forbidden("webhook.source_denied")`. The dedupe store fails
closed with a 503: a webhook sender retries, so a delivery is delayed rather than processed twice
or lost.
"""

from __future__ import annotations

from gateway.errors import ServiceUnavailable


class WebhookConfigError(ValueError):
    """A webhook route cannot start; `variable` names the environment variable at fault."""

    def __init__(self, variable: str, message: str, *, route_id: str | None = None) -> None:
        self.variable = variable
        self.message = message
        self.route_id = route_id
        super().__init__(str(self))

    def with_route(self, route_id: str) -> WebhookConfigError:
        return WebhookConfigError(self.variable, self.message, route_id=route_id)

    def __str__(self) -> str:
        return f"route {self.route_id}: {self.message}" if self.route_id else self.message


class DedupeStoreUnavailable(ServiceUnavailable):
    """The replay store could not be reached in time; the delivery is refused, not guessed at."""

    reason = "webhook.store_unavailable"

    def __init__(self, detail: str = "webhook replay store unavailable, retry later") -> None:
        super().__init__(None, detail)
