"""`GET /jobs/{jobId}/events`: the job's status changes as Server-Sent Events until it ends.

Scoped like every read: the job is looked up within the caller's org (another org's job is 404, the
same answer as a job that does not exist). The store is polled through its public `get`; each
change of status or attempt count is one `event: status` whose data is the job as JSON, with the
job's `updatedAt` as the event id. A comment line every `HEARTBEAT` seconds keeps proxies and the
gateway's stream-idle clock from ending a quiet stream. The stream ends after the job's final
state (`succeeded` or `failed`), when the job disappears, or after `MAX_SECONDS`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from upstream_stub.errors import NotFound
from upstream_stub.identity import user
from upstream_stub.jobs import job_view
from upstream_stub.services import services
from upstream_stub.store.jobs import FAILED, SUCCEEDED
from upstream_stub.web import check_query_org

POLL = 0.25
HEARTBEAT = 15.0
MAX_SECONDS = 1800.0


def _event(view: dict[str, object]) -> bytes:
    data = json.dumps(view, separators=(",", ":"))
    return f"event: status\nid: {view['updatedAt']}\ndata: {data}\n\n".encode()


async def job_events(request: Request) -> StreamingResponse:
    ident = user(request)
    check_query_org(request, ident)
    jobs = services(request).jobs
    job_id = request.path_params["jobId"]
    row = await jobs.get(ident.org_id, job_id)
    if row is None:
        raise NotFound("not_found", "no such job")

    async def stream() -> AsyncIterator[bytes]:
        current: Any = row  # a store row (its type belongs to the store)
        last: tuple[object, ...] | None = None
        started = beat = time.monotonic()
        yield b"retry: 2000\n\n"
        while current is not None:
            key = (current["status"], current["attempts"], current["updated_at"])
            if key != last:
                last = key
                beat = time.monotonic()
                yield _event(job_view(current))
            if current["status"] in (SUCCEEDED, FAILED):
                return
            now = time.monotonic()
            if now - started > MAX_SECONDS:
                return
            if now - beat >= HEARTBEAT:
                beat = now
                yield b": keep-alive\n\n"
            await asyncio.sleep(POLL)
            current = await jobs.get(ident.org_id, job_id)
        yield b"event: gone\ndata: {}\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


routes = [Route("/jobs/{jobId}/events", job_events, methods=["GET"])]
