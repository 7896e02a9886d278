"""Rendering an `Explanation` as the text transcript (`--json` output is `Explanation.to_dict()`)."""

from __future__ import annotations

import json

from gateway.explain.model import Explanation


def format_text(ex: Explanation) -> str:
    verdict = "ALLOWED" if ex.allowed else "DENIED"
    lines = [f"{ex.method} {ex.url}  ->  {verdict} {ex.status}" + (f" {ex.reason}" if ex.reason else "")]
    if ex.route is not None:
        r = ex.route
        lines.append(f"route: {r['id']} ({r['source']})  {','.join(r['methods'])} {r['path']} -> "
                     f"{r['upstream']}  auth: {r['auth']}")
    elif ex.reason is None:
        lines.append("route: none (answered by the gateway itself, outside the pipeline)")
    else:
        lines.append(f"route: none matched ({ex.detail or ex.reason})")
    lines.append("stages:")
    for s in ex.steps:
        decision = s.decision.upper() if s.decision == "denied" else s.decision
        lines.append(f"  {s.stage:15} {decision:14} {s.note}".rstrip())
    if ex.upstream is not None:
        up = ex.upstream
        lines.append("upstream (would be sent):")
        lines.append(f"  {up.method} {up.path}" + (f"?{up.query}" if up.query else ""))
        if up.identity is not None:
            lines.append(f"  identity: {json.dumps(up.identity, sort_keys=True)}")
        if up.body:
            lines.append(f"  body: {up.body}")
        lines.extend(f"  {k}: {v}" for k, v in up.headers)
    lines.append("response headers:")
    lines.extend(f"  {k}: {v}" for k, v in ex.response_headers)
    lines.extend(f"note: {n}" for n in ex.notes)
    return "\n".join(lines)
