"""Servers under test as subprocesses on 127.0.0.1, pinned to one CPU, always cleaned up.

* Stopping a server also stops every process it started: the proxy's launcher runs in a
  process group of its own, so they are found as descendants.
* stdout goes to /dev/null and stderr to an unlinked temp file: the proxy writes OpenWhisk
  log sentinels on both for every activation (part of the cost measured), and the stderr
  tail explains a server that fails to start.
* TMPDIR is a private folder removed at the end, so the action and socket folders a proxy
  makes do not pile up in /tmp.
"""

from __future__ import annotations

import http.client
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
PROBE_BODY = b'{"value":{},"activation_id":"probe"}'


def stop_tree(process: subprocess.Popen) -> None:
    """Terminate a server, then kill whatever it started that is left (it stops its own;
    this is for when it could not)."""
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()
    for child in descendants:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def log_tail(log: BinaryIO, size: int = 2000) -> str:
    """The end of a server's captured stderr, to explain a failure."""
    log.seek(max(0, log.seek(0, os.SEEK_END) - size))
    return log.read().decode("utf-8", "replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def post(port: int, path: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """One server process; `kind` is "bare" (with `options` for bare_server.py), or "proxy"
    with an optional action to --init, serving `runtime`; `env` is added to its environment."""

    def __init__(self, kind: str, cpu: int, init: Path | None = None, runtime: str = "python",
                 env: dict[str, str] | None = None, options: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.port = free_port()
        if kind == "bare":
            cmd = [sys.executable, str(BENCH / "bare_server.py"), "--port", str(self.port), *options]
        else:
            cmd = [str(VENV_BIN / "actionproxy"), "serve", "--runtime", runtime, "--port", str(self.port)]
            if init is not None:
                cmd += ["--init", str(init)]
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-server-")
        # the launcher runs on this venv's interpreter, as on an image's python3 with actionproxy
        # installed: `python3` on PATH may be a pyenv shim, a bash script that costs ~70 ms per start
        env = dict(os.environ, ACTIONPROXY_HOST=HOST, ACTIONPROXY_PYTHON=sys.executable, TMPDIR=self.tmp.name,
                   **(env or {}))
        self.log = tempfile.TemporaryFile()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(["taskset", "-c", str(cpu), *cmd], cwd=ROOT, env=env,
                                        stdout=subprocess.DEVNULL, stderr=self.log)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/run"

    def wait_listening(self, timeout: float = 20.0) -> float:
        """Seconds from spawn to the first HTTP response of any status (500 before init counts)."""
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited with {self.process.returncode}: "
                                   f"{self.stderr_tail()}")
            try:
                post(self.port, "/run", PROBE_BODY)
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                time.sleep(0.0005)
                continue
            return time.perf_counter() - self.started
        raise TimeoutError(f"{self.kind} server did not answer within {timeout} s")

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until /run answers 200: with --init, the action is loaded before the first answer."""
        self.wait_listening(timeout)
        status, body = post(self.port, "/run", PROBE_BODY)
        if status != 200:
            raise RuntimeError(f"{self.kind} server answers {status}: {body[:200]!r} {self.stderr_tail()}")

    def stderr_tail(self, size: int = 2000) -> str:
        return log_tail(self.log, size)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time used so far by the server process itself and by all its descendants
        (launcher, forked workers) that are alive now: where each request's cost goes."""
        def used(process: psutil.Process) -> float:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                return 0.0
            return times.user + times.system

        front = psutil.Process(self.process.pid)
        return {"server": used(front), "children": sum(map(used, front.children(recursive=True)))}

    def stop(self) -> None:
        stop_tree(self.process)
        self.log.close()
        self.tmp.cleanup()


def cpus() -> tuple[int, int]:
    """(server CPU, client CPU): the first two this process may use."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[0], allowed[1] if len(allowed) > 1 else allowed[0]


def machine() -> dict[str, str]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "proxy", "runtimes"], cwd=ROOT,
                           capture_output=True, text=True)
    return {"cpu": model, "cpus": str(os.cpu_count()), "python": platform.python_version(),
            "commit": commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")}
