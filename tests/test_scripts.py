"""scripts/run.sh stops everything it started on Ctrl-C (SIGINT) and SIGTERM; scripts/test.sh
--stress keeps one core busy while pytest runs and stops the burner afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.procs import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]

# Starts argv[1:] as a terminal would: SIGINT at its default. A suite started in the background of
# a non-interactive shell (`cmd &`, as a CI runner or a script may) inherits SIGINT ignored, and a
# shell cannot trap a signal that was ignored on entry: the Ctrl-C case would test the launcher.
SIGINT_DEFAULT = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execvp(sys.argv[1], sys.argv[1:])"]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl_c"])
def test_run_sh_stops_everything_it_started(tmp_path: Path, sig: int) -> None:
    gw, admin, up = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "KOMMO_", "UPSTREAM_"))}
    env.update(GATEWAY_PORT=str(gw), GATEWAY_ADMIN_PORT=str(admin), UPSTREAM_PORT=str(up),
               UPSTREAM_DB=str(tmp_path / "up.db"), GATEWAY_DRAIN_DELAY="0", GATEWAY_LOG_LEVEL="warning")
    log = open(tmp_path / "run.log", "wb")  # noqa: SIM115
    # Own session: the script and everything it starts share one process group to inspect.
    proc = subprocess.Popen([*SIGINT_DEFAULT, "bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_port(gw, timeout=120)
        wait_port(admin, timeout=30)
        assert group_alive(proc.pid)
        os.kill(proc.pid, sig)  # the script only, as `kill <pid>` would; Ctrl-C is the same to bash
        assert proc.wait(90) in (130, 143), (tmp_path / "run.log").read_text()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (group_alive(proc.pid) or not port_free(gw) or not port_free(up)):
            time.sleep(0.2)
        assert not group_alive(proc.pid), "run.sh left processes behind"
        assert port_free(gw) and port_free(admin) and port_free(up)
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_test_sh_stress_keeps_a_core_busy_and_stops_the_burner(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    # The probe measures, from inside the run, that another process is burning CPU: the system's
    # busy time grows by much more than this (sleeping) process uses.
    probe.write_text(
        "import os, time\n"
        "def busy():\n"
        "    with open('/proc/stat') as f:\n"
        "        v = [int(x) for x in f.readline().split()[1:]]\n"
        "    return sum(v) - v[3] - v[4], sum(v)\n"
        "def test_probe():\n"
        "    b0, t0 = busy(); time.sleep(2); b1, t1 = busy()\n"
        f"    open({str(tmp_path / 'share')!r}, 'w').write(str((b1 - b0) / max(1, t1 - t0)))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run(["bash", "scripts/test.sh", "--stress", str(probe), "-p", "no:cacheprovider", "-n", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    share = float((tmp_path / "share").read_text())
    cores = os.cpu_count() or 1
    assert share >= 0.8 / cores, share  # at least ~one core of the machine was busy
    pid = int(done.stderr.split("--stress: process ")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the burner is gone once the run is over
