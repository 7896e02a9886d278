"""The reason catalogue: every stable reason id a client can meet, in one place.

Each entry says the HTTP status, what happened, and what the client should do. It is the one source
for the page the gateway serves at `/v1/docs/errors` (every problem's `type` points there), for
the `reason` enums of the OpenAPI document and for `docs/reasons.md`. `tests/test_reasons.py`
scans the code of the gateway and of the bundled upstream and fails when a reason id is raised
anywhere without an entry here.

Adding a reason is one line in `CATALOGUE`:

    R("ratelimit.concurrency", 429, "ratelimit", "Too many of your requests are in flight.", "Wait for ..."),

`when` says which routes can give it, so the OpenAPI document lists it on exactly those:

    always      any route (framing, path, overload, upstream failure)
    body        routes that take a request body (POST/PUT/PATCH/DELETE)
    validate    routes whose body is validated against the operation's schema
    params      routes whose query or path parameters are checked against the operation's schemas
    jwt         routes with `auth: jwt`
    tenant      routes with a `tenant:` binding
    roles       routes with `roles:` or `scopes:`
    ratelimit   routes with a rate limit
    webhook     webhook routes
    mutating    routes with a mutating method (audit sink refusals)
    deprecated  routes with `deprecated:`
    cors        CORS preflights (OPTIONS), which the document does not list
    unrouted    requests that match no route
    upstream    raised by the bundled upstream (the document takes them from the upstream's own)
    log         recorded in logs and audit only, never sent as a refusal
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reason:
    """One reason id: its status, where it can occur, its meaning and the client's next step."""

    id: str
    status: int
    when: str
    meaning: str
    action: str


R = Reason

CATALOGUE: tuple[Reason, ...] = (
    # --- request framing and hygiene (before routing) -----------------------------------------
    R("request.bad_path", 400, "always", "The path is not canonical: `..`, `//`, an encoded slash or "
      "backslash, a control byte, invalid UTF-8, or a path parameter with characters not allowed.",
      "Send the canonical path; percent-encode nothing that is a path separator."),
    R("request.bad_framing", 400, "always", "Content-Length and Transfer-Encoding disagree, repeat, or "
      "the body does not match its declared length.", "Send one valid Content-Length or chunked body."),
    R("request.invalid", 400, "always", "The request cannot be forwarded safely (e.g. a header value "
      "the upstream protocol cannot carry).", "Remove control characters from header values."),
    R("request.bad_host", 400, "always", "The Host header is missing or given more than once.",
      "Send exactly one Host header."),
    R("request.upgrade_not_allowed", 400, "always", "A protocol upgrade (WebSocket, h2c) or CONNECT: no "
      "route of this API proxies one. The connection is closed.", "Use plain HTTP requests."),
    R("request.header_timeout", 408, "always", "The request head did not arrive in time; the connection "
      "is closed.", "Send the whole request head at once."),
    R("request.uri_too_long", 414, "always", "The URL is longer than the gateway accepts.",
      "Shorten the query; send large inputs in a body."),
    R("request.headers_too_large", 431, "always", "The request headers are too large or too many.",
      "Send fewer or smaller headers (cookies are a common cause)."),
    R("request.client_closed", 499, "log", "The client closed the connection before the answer.",
      "Nothing: recorded in the access log and audit only."),
    # --- routing -------------------------------------------------------------------------------
    R("route.not_found", 404, "unrouted", "No route of the public API has this path (default deny).",
      "Check the path against the OpenAPI document at /v1/openapi.json."),
    R("route.method_not_allowed", 405, "always", "The path exists but not with this method; `Allow` "
      "lists the methods it has.", "Use one of the methods in the `Allow` header."),
    R("route.sunset", 410, "deprecated", "This deprecated route has passed its sunset date and is "
      "gone.", "Move to the successor named in the `Link` header and the API documentation."),
    # --- body -------------------------------------------------------------------------------------
    R("request.body_too_large", 413, "body", "The body is larger than this route accepts.",
      "Send a smaller body; the limit is per route."),
    R("request.body_timeout", 408, "body", "The client stopped sending the body part way, or took "
      "longer than the route allows for the whole body.",
      "Retry; send the whole body without pausing."),
    R("request.unsupported_media_type", 415, "body", "The body's Content-Type is not one this route "
      "reads (JSON bodies must be `application/json`, charset utf-8 if given).",
      "Send `Content-Type: application/json` with a UTF-8 JSON body."),
    R("request.bad_json", 400, "body", "The body is not valid UTF-8 JSON, uses NaN/Infinity or an "
      "out-of-range number, or nests too deeply.", "Send strict JSON (RFC 8259)."),
    R("request.ambiguous", 400, "body", "The request can be read more than one way: a duplicate JSON "
      "key at any depth, a JSON body that is not an object where one is required, or a parameter "
      "given twice.", "Send each key and parameter once."),
    R("request.invalid_body", 422, "validate", "The JSON body does not match the operation's schema; "
      "`errors` lists a JSON pointer and a message per failing field (at most 10).",
      "Fix the fields named in `errors`; the schema is in /v1/openapi.json."),
    R("request.invalid_parameter", 422, "params", "A query or path parameter does not match the "
      "operation's declared schema (type, bounds, pattern, enum), is not valid percent-encoded UTF-8, "
      "is given more than once, or a required one is missing; `errors` lists where, which and why (at most 10).",
      "Fix the parameters named in `errors`; their schemas are in /v1/openapi.json."),
    # --- authentication --------------------------------------------------------------------------
    R("auth.missing_token", 401, "jwt", "No bearer token was sent.",
      "Send `Authorization: Bearer <access token>`."),
    R("auth.invalid_token", 401, "jwt", "The token could not be verified.", "Sign in again."),
    R("auth.malformed", 401, "jwt", "The Authorization header or token is not well formed (or a claim is: "
      "`exp` not a number, `sub` not a string of 1 to 256 characters).",
      "Send `Authorization: Bearer <compact JWS>`, once."),
    R("auth.bad_header", 401, "jwt", "The token's header is invalid (e.g. an unexpected field).",
      "Use a token issued by the identity provider."),
    R("auth.bad_algorithm", 401, "jwt", "The token is signed with an algorithm this API does not accept.",
      "Use a token issued by the identity provider."),
    R("auth.bad_signature", 401, "jwt", "The token's signature does not verify.", "Sign in again."),
    R("auth.unknown_kid", 401, "jwt", "The token names a signing key the gateway does not know.",
      "Sign in again; if it persists the provider rotated keys and the gateway will catch up."),
    R("auth.expired", 401, "jwt", "The token has expired.", "Refresh the token and retry."),
    R("auth.not_yet_valid", 401, "jwt", "The token's `nbf` is in the future.", "Check the client clock."),
    R("auth.iat_in_future", 401, "jwt", "The token's `iat` is in the future.", "Check the client clock."),
    R("auth.too_old", 401, "jwt", "The token was issued longer ago than the gateway accepts.",
      "Refresh the token."),
    R("auth.bad_issuer", 401, "jwt", "The token's issuer is not the expected one.",
      "Use a token of this API's identity provider."),
    R("auth.bad_audience", 401, "jwt", "The token is not meant for this API (`aud`).",
      "Request a token for this API's audience."),
    R("auth.missing_claim", 401, "jwt", "The token lacks a claim the gateway requires (e.g. `exp`, `sub`).",
      "Use a token issued by the identity provider."),
    R("auth.token_too_large", 401, "jwt", "The token is larger than the gateway accepts.",
      "Use a token without oversized custom claims."),
    R("auth.unavailable", 401, "jwt", "The gateway has no key material to verify tokens right now.",
      "Retry shortly."),
    R("auth.too_many_failures", 429, "jwt", "Too many failed token verifications from this address: "
      "further failing tokens are refused for a while (`Retry-After`); valid tokens are still served.",
      "Fix the token; a valid token is served at once, a failing one after `Retry-After` seconds."),
    # --- tenant and authorization ------------------------------------------------------------
    R("tenant.mismatch", 403, "tenant", "The `orgId` in the path, query or body names another "
      "organisation than your token's.", "Send your own organisation's id (or omit it where the route "
      "fills it in)."),
    R("tenant.missing_claim", 403, "tenant", "Your token carries no organisation claim.",
      "Use a token issued for a member of an organisation."),
    R("authz.forbidden", 403, "roles", "Your role or scopes do not allow this operation.",
      "Ask an organisation admin or owner."),
    R("authz.unknown_role", 403, "roles", "Your token's role is not one the policy knows.",
      "Use a token with a role of owner, admin, member or viewer."),
    # --- CORS (preflights) ---------------------------------------------------------------------------
    R("cors.origin_denied", 403, "cors", "The browser origin is not allowed to call this API.",
      "Call from an allowed origin, or server-side."),
    R("cors.method_denied", 403, "cors", "The preflight asks for a method the route does not allow.",
      "Use a method the route has."),
    R("cors.header_denied", 403, "cors", "The preflight asks for a request header that is not allowed.",
      "Send only the allowed headers."),
    # --- rate limiting ---------------------------------------------------------------------------
    R("ratelimit.exceeded", 429, "ratelimit", "A rate limit of this route was reached; `RateLimit`, "
      "`RateLimit-Policy` and `Retry-After` say which and for how long.",
      "Wait `Retry-After` seconds; spread requests out."),
    R("ratelimit.concurrency", 429, "always", "Too many of your organisation's requests are in flight "
      "at once (`Retry-After`).", "Wait for some to finish; lower the client's concurrency."),
    R("ratelimit.unavailable", 503, "ratelimit", "The shared rate-limit store cannot be reached and "
      "the route fails closed.", "Retry after `Retry-After` seconds."),
    # --- webhooks --------------------------------------------------------------------------------
    R("webhook.bad_signature", 401, "webhook", "The webhook's signature or secret path token does not "
      "verify.", "Check the integration's secret."),
    R("webhook.stale", 401, "webhook", "The webhook's timestamp is too old (a replay).",
      "Send deliveries promptly with the current time."),
    R("webhook.source_denied", 403, "webhook", "The webhook came from an address not allowed to send it.",
      "Send from the provider's published ranges."),
    R("webhook.too_many_failures", 429, "webhook", "Too many failed webhook verifications from this "
      "address; it is blocked for a while (`Retry-After`).", "Fix the signature or secret, then wait."),
    R("webhook.in_progress", 409, "webhook", "This delivery is being processed (`Retry-After`).",
      "Retry later; it will be acknowledged once done."),
    R("webhook.duplicate", 200, "log", "The delivery was already processed; acknowledged, not forwarded.",
      "Nothing."),
    R("webhook.store_unavailable", 503, "webhook", "The replay store cannot be reached; the delivery is "
      "refused rather than processed twice.", "Retry later (senders do)."),
    # --- gateway and upstream availability ----------------------------------------------------
    R("gateway.overloaded", 503, "always", "The gateway is at its in-flight limit, or holds as many "
      "request bodies as it may buffer, and sheds load.",
      "Retry after `Retry-After` seconds with backoff."),
    R("gateway.draining", 503, "always", "This replica is shutting down.", "Retry; another replica answers."),
    R("gateway.not_ready", 502, "always", "The gateway is starting or stopping.", "Retry shortly."),
    R("gateway.internal", 500, "log", "An unexpected error in the gateway.",
      "Retry; report the `request_id` if it persists."),
    R("audit.unavailable", 503, "mutating", "The audit log cannot be written and the policy refuses "
      "writes without it.", "Retry later; reads still work."),
    R("upstream.unavailable", 502, "always", "The backend could not be reached.", "Retry with backoff."),
    R("upstream.bad_response", 502, "always", "The backend answered with something the gateway will not "
      "pass on.", "Retry; report the `request_id` if it persists."),
    R("upstream.timeout", 504, "always", "The backend did not answer in time.",
      "Retry with backoff; the operation may have happened (use idempotent retries)."),
    R("upstream.saturated", 503, "always", "All connections to the backend are busy.",
      "Retry after `Retry-After` seconds."),
    # --- raised by the bundled upstream (behind the gateway) -----------------------------------
    R("not_found", 404, "upstream", "No such object in your organisation.", "Check the id."),
    R("conflict", 409, "upstream", "The request conflicts with the object's current state.",
      "Read the object again and retry."),
    R("validation.failed", 422, "upstream", "The backend refused a field or parameter (e.g. `limit` out "
      "of range, a malformed cursor, nothing to update).", "Fix the named field."),
    R("crm.not_connected", 409, "upstream", "The CRM connection is not active (not authorised yet, or "
      "revoked).", "Authorise the connection (Kommo OAuth) first."),
    R("kommo.not_configured", 503, "upstream", "The Kommo integration is not configured on this server.",
      "Ask the operator to configure it."),
    R("kommo.unavailable", 502, "upstream", "Kommo could not be reached.", "Retry later."),
    R("kommo.bad_host", 400, "upstream", "The account host is not a Kommo host.",
      "Use the `referer` Kommo sent."),
    R("oauth.bad_request", 400, "upstream", "An OAuth callback parameter is missing or malformed.",
      "Restart the Kommo authorisation."),
    R("oauth.bad_state", 400, "upstream", "The OAuth `state` is invalid, used or expired.",
      "Restart the Kommo authorisation."),
    R("oauth.denied", 400, "upstream", "The Kommo consent was not granted.", "Grant the consent."),
    R("oauth.grant_refused", 400, "upstream", "Kommo refused the authorisation code.",
      "Restart the Kommo authorisation."),
    R("webhook.malformed", 400, "upstream", "The webhook body lacks what the backend needs.",
      "Check the sender's payload."),
    R("identity.missing", 401, "upstream", "The backend got no gateway identity (called around the "
      "gateway).", "Call the API through the gateway."),
    R("identity.invalid", 401, "upstream", "The gateway identity did not verify at the backend.",
      "Report the `request_id` to the operator (keys out of step)."),
    R("identity.expired", 401, "upstream", "The gateway identity expired before the backend read it.",
      "Retry."),
    R("identity.wrong_kind", 403, "upstream", "A user identity on a service-only route or the reverse.",
      "Report the `request_id` to the operator."),
    R("upstream.internal", 500, "upstream", "An unexpected error in the backend.",
      "Retry; report the `request_id` if it persists."),
)

BY_ID: dict[str, Reason] = {r.id: r for r in CATALOGUE}
if len(BY_ID) != len(CATALOGUE):  # pragma: no cover - guarded by tests/test_reasons.py
    raise RuntimeError("duplicate reason id in gateway.reasons.CATALOGUE")


def reasons_for(kinds: set[str]) -> list[Reason]:
    """The catalogue entries a route with these `when` kinds can give (`always` included)."""
    return [r for r in CATALOGUE if r.when == "always" or r.when in kinds]
