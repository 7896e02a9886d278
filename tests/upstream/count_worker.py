"""A worker process for the two-process test: runs every `crm.sync` job it claims and writes its id.

Run as `python -m tests.upstream.count_worker DB OUTFILE READYFILE`; stops cleanly on SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from upstream_stub.store import open_stores
from upstream_stub.store.jobs import Claim
from upstream_stub.worker import Worker


async def main(target: str, out: str, ready: str) -> None:
    stores = await open_stores(target, pool_size=4)
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    async def run(claim: Claim) -> dict[str, int]:
        await asyncio.sleep(0.02)
        os.write(fd, f"{claim.id}\n".encode())  # one append per run: a duplicate run shows as a duplicate line
        return {"pid": os.getpid()}

    worker = Worker(stores.jobs, {"crm.sync": run}, concurrency=3, lease=10.0, poll=0.05)
    worker.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await asyncio.to_thread(Path(ready).write_text, str(os.getpid()))
    await stop.wait()
    await worker.stop(5.0)
    await stores.close()
    os.close(fd)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
