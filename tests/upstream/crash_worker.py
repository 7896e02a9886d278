"""A worker process for the crash test: its handler announces the job, then hangs until SIGKILL.

Run as `python -m tests.upstream.crash_worker DB MARKER LEASE` (DB: an SQLite path or a postgresql:// URL).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from upstream_stub.store import open_stores
from upstream_stub.store.jobs import Claim
from upstream_stub.worker import Worker


async def main(db_path: str, marker: str, lease: float) -> None:
    stores = await open_stores(db_path)

    async def hang(claim: Claim) -> dict[str, str]:
        await asyncio.to_thread(Path(marker).write_text, claim.id)
        await asyncio.sleep(3600)
        return {}

    Worker(stores.jobs, {"crm.sync": hang}, lease=lease, poll=0.05).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
