"""wrk as the load generator: a C event loop on its own CPU, so the client is never the limit.

Each point POSTs one fixed body (post.lua reads it from $WRK_BODY_FILE) over keep-alive
connections, and is parsed from wrk's `--latency` text report. wrk opens all its connections
at once; those the server's listen backlog cannot hold wait for a SYN retransmit (1 s and
more), which shows in p99 and max, so each point also counts the kernel's listen overflows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

LUA = Path(__file__).resolve().parent / "post.lua"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class Point:
    """One wrk run. Latencies in ms; http_errors are 4xx/5xx answers (wrk's "Non-2xx or 3xx");
    listen_overflows are connections the kernel dropped at a full accept queue (machine-wide)."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    http_errors: int
    socket_errors: int
    listen_overflows: int = 0

    @property
    def errors(self) -> int:
        return self.http_errors + self.socket_errors

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self) | {"errors": self.errors}


def ensure_wrk() -> str:
    """wrk's path; as root, install Debian's wrk if it is missing."""
    path = shutil.which("wrk")
    if path is None and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && apt-get install -y -qq wrk >/dev/null", shell=True, check=True)
        path = shutil.which("wrk")
    if path is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")
    return path


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()
    return float(number) * UNITS[unit]


def parse(report: str) -> Point:
    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, report)
        if match is None:
            if default is None:
                raise ValueError(f"wrk output has no {pattern!r}:\n{report}")
            return default
        return match.group(1)

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", report)
    return Point(
        requests=int(find(r"(\d+) requests in")),
        seconds=_ms(find(r"requests in ([\d.]+[a-z]+),")) / 1e3,
        rps=float(find(r"Requests/sec:\s+([\d.]+)")),
        p50_ms=_ms(find(r"\s50%\s+([\d.]+[a-z]+)")),
        p99_ms=_ms(find(r"\s99%\s+([\d.]+[a-z]+)")),
        http_errors=int(find(r"Non-2xx or 3xx responses: (\d+)", "0")),
        socket_errors=sum(map(int, socket_errors.groups())) if socket_errors else 0,
    )


def listen_overflows() -> int:
    """TcpExt ListenOverflows from /proc/net/netstat (header line, then values line)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split()))["ListenOverflows"])
    return 0


def run(wrk: str, url: str, body: Path, connections: int, seconds: int, cpu: int) -> Point:
    """One point: one wrk thread (a single pinned CPU gains nothing from more), -c connections."""
    cmd = ["taskset", "-c", str(cpu), wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
           "--latency", "-s", str(LUA), url]
    overflows = listen_overflows()
    done = subprocess.run(cmd, env=dict(os.environ, WRK_BODY_FILE=str(body)), capture_output=True,
                          text=True, check=True, timeout=seconds + 30)
    point = parse(done.stdout)
    point.listen_overflows = listen_overflows() - overflows
    return point
