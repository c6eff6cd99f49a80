"""Driving ``wrk`` (the HTTP load generator from Debian) and reading what it prints.

``wrk`` runs for a fixed time with ``-t1 -cN --latency``; a Lua script written next to the
run sets the method, body and headers. Its text output gives requests/s, the latency
percentiles, the count of answers other than 2xx/3xx and the socket errors.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from _bench import BenchError

__all__ = ["WrkResult", "find_wrk", "parse_wrk", "run_wrk", "write_script"]

_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_PERCENTILE = re.compile(rf"^\s*(50|99)(?:\.0+)?%\s+{_TIME}\s*$", re.M)
_REQUESTS = re.compile(rf"^\s*([0-9]+) requests in {_TIME}", re.M)
_RATE = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+([0-9]+)")
_SOCKET = re.compile(
    r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)"
)


@dataclass(frozen=True)
class WrkResult:
    """One fixed-length ``wrk`` run: throughput, latency (ms) and what went wrong."""

    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "requests_per_s": self.requests_per_s,
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
        }


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise BenchError("wrk is missing; install it with `apt-get install wrk` (Debian)")
    return found


def _lua_string(text: str) -> str:
    """``text`` as a Lua long string whose closing bracket it cannot contain."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def write_script(path: Path, body: bytes, headers: Mapping[str, str]) -> Path:
    """A wrk Lua script sending ``POST`` with ``body`` and ``headers`` (mode 0600: keys)."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body.decode())}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        # The spaces matter: ``t[[[name]]]`` would read as a call of ``t`` with a long string.
        lines.append(f"wrk.headers[ {_lua_string(name)} ] = {_lua_string(value)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def _seconds(value: str, unit: str) -> float:
    return float(value) * _SECONDS[unit]


def parse_wrk(output: str) -> WrkResult:
    """The figures of ``wrk --latency``'s report; BenchError if a figure is missing."""
    percentiles = {m[1]: _seconds(m[2], m[3]) * 1e3 for m in _PERCENTILE.finditer(output)}
    requests, rate = _REQUESTS.search(output), _RATE.search(output)
    if requests is None or rate is None or set(percentiles) != {"50", "99"}:
        raise BenchError(f"could not read wrk's report:\n{output[-1500:]}")
    non_2xx = _NON_2XX.search(output)
    socket = _SOCKET.search(output)
    return WrkResult(
        requests=int(requests[1]),
        seconds=_seconds(requests[2], requests[3]),
        requests_per_s=float(rate[1]),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(map(int, socket.groups())) if socket else 0,
    )


def run_wrk(
    wrk: str,
    url: str,
    script: Path,
    *,
    connections: int,
    seconds: int,
    cpu: int | None,
) -> WrkResult:
    """One run of ``wrk -t1 -c<connections> -d<seconds>s --latency``, on core ``cpu`` if given."""
    argv = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk did not finish {seconds + 60} s into a {seconds} s run") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk failed (exit {done.returncode}):\n{done.stderr[-1500:]}")
    return parse_wrk(done.stdout)
