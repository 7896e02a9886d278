"""Running wrk and reading its report.

Every target gets the same load: a Lua script that cycles through many pre-built requests,
each with the bearer token of a different user. One token would be rate-limited by the shipped
policy (20/s per `sub`), and a benchmark of 429s measures nothing; thousands of users is also what
the gateway sees in production. Requests are formatted once in `init`, so wrk's per-request cost
is a table lookup and is the same for every target. The `validate` variants send a POST with a
JSON body instead (the same script, given the method and a body file).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

LUA = """\
-- bench/wrk.py: cycle through one pre-formatted request per token
-- script arguments: tokens file, then optionally the method and a file holding a JSON body
local reqs = {}
local n = 0
local i = 0
function init(args)
  local method = args[2] or "GET"
  local body = nil
  if args[3] and #args[3] > 0 then
    local f = assert(io.open(args[3], "rb"))
    body = f:read("*a")
    f:close()
  end
  for line in io.lines(args[1]) do
    if #line > 0 then
      n = n + 1
      local headers = {["Authorization"] = "Bearer " .. line}
      if body then headers["Content-Type"] = "application/json" end
      reqs[n] = wrk.format(method, nil, headers, body)
    end
  end
  if n == 0 then error("no tokens in " .. tostring(args[1])) end
end
function request()
  i = i % n + 1
  return reqs[i]
end
-- --latency prints only p50/75/90/99; the tail beyond that, in microseconds:
function done(summary, latency, requests)
  io.write(string.format("BENCH_P999_US %d\\nBENCH_MAX_US %d\\n", latency:percentile(99.9), latency.max))
end
"""

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_LAT = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.M)
_NON2XX = re.compile(r"^\s*Non-2xx or 3xx responses:\s+(\d+)", re.M)
_P999 = re.compile(r"^BENCH_P999_US (\d+)", re.M)
_MAX = re.compile(r"^BENCH_MAX_US (\d+)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkError(RuntimeError):
    """wrk failed or printed something we cannot read."""


@dataclass(frozen=True)
class WrkResult:
    """The figures of one wrk run. Latencies in milliseconds."""

    rps: float
    requests: int
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    p999_ms: float = 0.0
    max_ms: float = 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def parse(text: str) -> WrkResult:
    rps = _RPS.search(text)
    total = _TOTAL.search(text)
    lat = {pct: float(v) * _UNITS[unit] for pct, v, unit in _LAT.findall(text)}
    if rps is None or total is None or set(lat) != {"50", "75", "90", "99"}:
        raise WrkError(f"cannot read wrk output (was --latency given?):\n{text}")
    p999, top = _P999.search(text), _MAX.search(text)
    non2xx = _NON2XX.search(text)
    sock = _SOCKET.search(text)
    socket_errors = dict(zip(("connect", "read", "write", "timeout"),
                             (int(x) for x in sock.groups()), strict=True)) if sock else {}
    return WrkResult(
        rps=float(rps.group(1)), requests=int(total.group(1)),
        p50_ms=lat["50"], p75_ms=lat["75"], p90_ms=lat["90"], p99_ms=lat["99"],
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors={k: v for k, v in socket_errors.items() if v},
        p999_ms=int(p999.group(1)) / 1000 if p999 else 0.0,
        max_ms=int(top.group(1)) / 1000 if top else 0.0,
    )


def write_script(directory: Path, tokens: list[str]) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    script, tokens_file = directory / "tokens.lua", directory / "tokens.txt"
    script.write_text(LUA)
    tokens_file.write_text("\n".join(tokens) + "\n")
    return script, tokens_file


def run(url: str, *, conns: int, duration: int, script: Path, tokens_file: Path,
        timeout_s: int = 10, method: str = "GET", body_file: Path | None = None) -> WrkResult:
    """`wrk -t1 -cC -dD --latency` against `url` (one thread: the machine has few cores).

    `method` and `body_file` (a JSON body, sent with `Content-Type: application/json`) shape every
    request; the default is the GET every target gets.
    """
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", f"--timeout={timeout_s}s",
            "-s", str(script), url, "--", str(tokens_file), method, str(body_file or "")]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout_s + 30,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {exc}") from None
    if done.returncode != 0:
        raise WrkError(f"wrk exited with {done.returncode}: {done.stderr.strip() or done.stdout.strip()}")
    if "BENCH_P999_US" not in done.stdout:
        # A Lua error makes wrk send requests without the script's tokens and still exit 0.
        raise WrkError(f"the wrk script did not run: {done.stderr.strip()[-400:]}")
    return parse(done.stdout)
