"""A private redis-server that a test can stall on purpose (`DEBUG SLEEP`), as a busy or paused
Redis does: connections stay open, nothing is answered until the sleep ends."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading

from tests.support.procs import RedisServer


class StallableRedis(RedisServer):
    """`RedisServer` started with `--enable-debug-command local`; `stall(s)` freezes it for `s`."""

    def start(self) -> StallableRedis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed; scripts/test.sh installs it")
        from tests.support.procs import wait_port

        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--enable-debug-command", "local", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)
        return self

    def stall(self, seconds: float) -> threading.Thread:
        """Start `DEBUG SLEEP seconds` in a thread and return once Redis has received it."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=seconds + 10)
        arg = f"{seconds:g}".encode()
        sock.sendall(b"*3\r\n$5\r\nDEBUG\r\n$5\r\nSLEEP\r\n$%d\r\n%s\r\n" % (len(arg), arg))

        def wait_reply() -> None:
            try:
                sock.recv(64)  # "+OK" once the sleep is over
            finally:
                sock.close()

        t = threading.Thread(target=wait_reply, daemon=True)
        t.start()
        return t

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
