"""A worker process for the crash test: its handler announces the job, then hangs until SIGKILL.

Run as `python -m tests.upstream.crash_worker DB MARKER LEASE`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from upstream_stub.db import Database
from upstream_stub.store.jobs import Claim, JobStore
from upstream_stub.worker import Worker


async def main(db_path: str, marker: str, lease: float) -> None:
    db = Database(db_path)
    await db.open()

    async def hang(claim: Claim) -> dict[str, str]:
        await asyncio.to_thread(Path(marker).write_text, claim.id)
        await asyncio.sleep(3600)
        return {}

    Worker(JobStore(db), {"crm.sync": hang}, lease=lease, poll=0.05).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
