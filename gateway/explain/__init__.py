"""`gateway explain`: why one request is allowed or denied, by running the real pipeline.

Nothing here re-implements a decision. A private `Gateway` is built around the loaded policy, its
forwarder is swapped for a stub upstream that records what would be sent and answers 200, and a
probe between every two stages records how far the request got and which stage raised. What a
stage "steps aside" from is read from the route's compiled parts, the same ones the stages read.

Threat: an explain transcript is pasted into pull requests and tickets, so it never contains a
token, a secret or the identity assertion's signature (its payload is decoded and shown instead);
path parameters of `url_token` webhook routes are the secret and are shown as `<redacted>`.
Rate limits and webhook dedupe run on process memory here, never on the shared Redis.

Layout: `model` (request and outcome types), `stub` (stage probes and the stub upstream),
`runner` (the private gateway, one request at a time), `steps` (per-stage verdicts), `report`
(text rendering), `command` (`explain_main`). The runner (`run_requests`) is shared with
`gateway test-policy` (gateway/policytest.py).
"""

from gateway.explain.command import explain_main, load_for_cli, request_from_args
from gateway.explain.model import MEMORY_NOTE, REDACTED, ExplainRequest, Explanation, Step, Upstream, UsageError
from gateway.explain.report import format_text
from gateway.explain.runner import build_scope, mint_claims_token, run_requests
from gateway.explain.stub import StubUpstream

__all__ = [
    "MEMORY_NOTE", "REDACTED", "ExplainRequest", "Explanation", "Step", "StubUpstream", "Upstream", "UsageError",
    "build_scope", "explain_main", "format_text", "load_for_cli", "mint_claims_token", "request_from_args",
    "run_requests",
]
