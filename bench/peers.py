"""The peers (bench/peer_files/ or --peers), run from a private copy under .bench/ on free ports.

The peer files are treated as read-only and their fixed ports (9001, 9002, ...) may already be taken
by someone else's copy on this machine, so the nginx configs are templated onto free ports with
their pid and error-log files moved under .bench/, and the Fastify peer is copied (its
node_modules is installed once by `npm ci` and reused while package-lock.json is unchanged).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from bench.procs import LOOPBACK, Proc, Procs, free_port

FASTIFY_FILES = ("package.json", "package-lock.json", "server.js", "mint.js", "README.md")


class Unavailable(RuntimeError):
    """A peer cannot run here; the message is the printed `skipped:` reason."""


def missing(*tools: str) -> str | None:
    absent = [t for t in tools if shutil.which(t) is None]
    return f"{', '.join(absent)} not installed" if absent else None


def nginx_conf(src: Path, dest_dir: Path, ports: dict[int, int]) -> Path:
    """Copy an nginx peer config with its ports remapped and its pid/error_log under dest_dir."""
    text = src.read_text()
    for old, new in ports.items():
        text, n = re.subn(rf"{re.escape(LOOPBACK)}:{old}\b", f"{LOOPBACK}:{new}", text)
        if n == 0:
            raise Unavailable(f"{src} no longer mentions {LOOPBACK}:{old}; update bench/peers.py")
    text = re.sub(r"^(\s*)pid\s+[^;]+;", rf"\1pid {dest_dir / src.stem}.pid;", text, flags=re.M)
    text = re.sub(r"^(\s*)error_log\s+[^;]+;", rf"\1error_log {dest_dir / src.stem}.err;", text, flags=re.M)
    dest = dest_dir / src.name
    dest.write_text(text)
    return dest


def start_nginx(procs: Procs, name: str, conf: Path, port: int) -> Proc:
    prefix = conf.parent
    # Foreground (`daemon off`) so the master is our child and its workers share its process group.
    argv = ["nginx", "-p", f"{prefix}/", "-e", str(prefix / f"{conf.stem}.err"), "-c", str(conf),
            "-g", "daemon off;"]
    return procs.start(name, argv, cwd=prefix, port=port)


def start_upstream(procs: Procs, peers: Path, work: Path) -> tuple[Proc, bool]:
    """The tiny JSON upstream: nginx's `upstream.conf`, else the Python fallback (second item False)."""
    port = free_port()
    if missing("nginx") is None and (peers / "nginx" / "upstream.conf").is_file():
        conf = nginx_conf(peers / "nginx" / "upstream.conf", _dir(work / "nginx"), {9001: port})
        return start_nginx(procs, "nginx-upstream", conf, port), True
    argv = [sys.executable, "-m", "bench.upstream", str(port)]
    return procs.start("python-upstream", argv, cwd=Path(__file__).resolve().parents[1], port=port), False


def start_nginx_proxy(procs: Procs, peers: Path, work: Path, upstream_port: int) -> Proc:
    port = free_port()
    conf = nginx_conf(peers / "nginx" / "proxy.conf", _dir(work / "nginx"),
                      {9001: upstream_port, 9002: port})
    return start_nginx(procs, "nginx-proxy", conf, port)


def prepare_fastify(peers: Path, work: Path) -> Path:
    """Copy the Fastify peer to .bench/fastify and `npm ci` it when its lockfile changed."""
    reason = missing("node", "npm")
    src = peers / "fastify"
    if reason:
        raise Unavailable(reason)
    if not (src / "server.js").is_file():
        raise Unavailable(f"no Fastify peer at {src} (pass --peers DIR or set BENCH_PEERS)")
    dest = _dir(work / "fastify")
    for name in FASTIFY_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    stamp = dest / ".lock-sha256"
    digest = hashlib.sha256((dest / "package-lock.json").read_bytes()).hexdigest()
    if (dest / "node_modules").is_dir() and stamp.is_file() and stamp.read_text() == digest:
        return dest
    print("  fastify: npm ci (first run, cached afterwards) ...", flush=True)
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=dest,
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise Unavailable(f"npm ci failed: {(done.stderr or done.stdout).strip()[-400:]}")
    stamp.write_text(digest)
    return dest


def start_redis(procs: Procs, work: Path, name: str = "redis") -> tuple[Proc, str]:
    """A private, non-persistent redis-server on a free loopback port."""
    if reason := missing("redis-server"):
        raise Unavailable(reason)
    port = free_port()
    data = _dir(work / "redis")
    argv = ["redis-server", "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(data), "--protected-mode", "yes"]
    return procs.start(name, argv, port=port), f"redis://{LOOPBACK}:{port}"


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
