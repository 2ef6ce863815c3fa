"""Runtime images: container cold start, /init to first result, image size.

    .venv/bin/python bench/images.py [--cold-rounds N] [--init-rounds N]

For each runtime image (actionproxy/python, actionproxy/nodejs, actionproxy/blackbox) and for
the blackbox example images (runtimes/blackbox/examples/, built here first, from cache when
nothing changed):

(a) container cold start, as a platform sees it: from spawning the `docker run -d` client
    until the first successful /run result of a trivial action. The container is polled
    with GET /healthz until it serves (`listening`), then python and nodejs get /init with
    the action's source and a /run; the blackbox stub and the example images a /run only
    (their `exec` is in the image). Median of --cold-rounds (5). Twice: with the port
    published on 127.0.0.1 (`-p`, the bridge network: what docker adds to reach a container
    that way is in every figure), and with `--network host` (the proxy told to listen on
    127.0.0.1), where the proxy's own start shows. A reference row, `python3 -m http.server`
    in the stand-in base image, is the floor: a container that serves as soon as Python runs.
(b) /init to first result inside a running container: a fresh container each round, started
    and polled until it serves (not timed), then /init and the first /run on one keep-alive
    connection. python/nodejs: /init with source; blackbox: /init with a `#!/bin/sh` exec;
    the example images: /init `{}` (keeps the image's exec). Median of --init-rounds (10).
(c) the size of each image, and how much it adds to the image it is built on.

Containers are reachable on 127.0.0.1 only (published there, or listening there in the host's
network) and are always removed (also on errors, ^C and SIGTERM).
Rounds are interleaved across images, so that a noisy moment is spread over all of them.
Writes bench/results/images-latest.json and prints a table.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
EXAMPLES = ROOT / "runtimes" / "blackbox" / "examples"
HOST = "127.0.0.1"
DOCKER = os.environ.get("DOCKER") or ("/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else "docker")
START_CAP = 60.0  # seconds a container may take to serve before the round fails
RUN_BODY = json.dumps({"value": {"name": "Ada"}, "activation_id": "bench"}).encode()

PYTHON_ACTION = "def main(args):\n    return {'ok': True}\n"
NODE_ACTION = "function main(args) {\n  return { ok: true };\n}\n"
SH_EXEC = "#!/bin/sh\necho '{\"ok\":true}'\n"


@dataclass(frozen=True)
class Target:
    name: str
    image: str
    base: str | None  # the image it is built FROM (for "adds")
    cold_init: dict | None  # /init body sent before the first /run at cold start (None: /run only)
    init: dict | None  # /init body of the init-to-first-result measurement (None: not measured)
    ok: object  # what the first /run must answer (a value or a predicate)
    init_ok: object = None  # what the /run after `init` must answer, when not `ok`
    reference: bool = False  # not a proxy: http.server, serving is its first result

    def command(self, port: int, host_network: bool) -> list[str]:
        if not self.reference:
            return []
        return ["python3", "-m", "http.server", *(["--bind", HOST, str(port)] if host_network else ["8080"])]


def _source(code: str) -> dict:
    return {"value": {"code": code, "main": "main"}}


def _stub_error(body: object) -> bool:
    return isinstance(body, dict) and "stub action" in str(body.get("error", ""))


REFERENCE = Target("reference", "python:3.11-slim-bookworm", None, None, None, None, reference=True)
TARGETS = [
    REFERENCE,
    Target("python", "actionproxy/python", "python:3.11-slim-bookworm",
           _source(PYTHON_ACTION), _source(PYTHON_ACTION), {"ok": True}),
    Target("nodejs", "actionproxy/nodejs", "node:20-bookworm-slim",
           _source(NODE_ACTION), _source(NODE_ACTION), {"ok": True}),
    Target("blackbox", "actionproxy/blackbox", "python:3.11-slim-bookworm",  # cold: the stub; init: sh
           None, _source(SH_EXEC), _stub_error, init_ok={"ok": True}),
    Target("example/c", "actionproxy-example/c", "actionproxy/blackbox",
           None, {}, lambda b: isinstance(b, dict) and b.get("msg") == "Hello from arbitrary C program!"),
    Target("example/bash-loop", "actionproxy-example/bash-loop", "actionproxy/blackbox",
           None, {}, lambda b: isinstance(b, dict) and b.get("count") == 1),
    Target("example/python", "actionproxy-example/python", "actionproxy/blackbox",
           None, {}, lambda b: isinstance(b, dict) and b.get("greeting") == "Hello, Ada!"),
]
NETWORKS = ("published", "host")


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} failed: {done.stderr.strip()[:500]}")
    return done


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _matches(expected: object, body: object) -> bool:
    return expected(body) if callable(expected) else body == expected


class Containers:
    """Every container this run starts, removed by `remove` or, whatever happens, by `close`."""

    def __init__(self) -> None:
        self.names: set[str] = set()

    def spawn(self, target: Target, port: int, host_network: bool = False) -> tuple[str, subprocess.Popen]:
        """`docker run -d` started (not waited for): published on 127.0.0.1:port, or in the
        host's network listening on 127.0.0.1:port."""
        name = f"actionproxy-bench-{uuid.uuid4().hex[:12]}"
        self.names.add(name)
        network = (["--network", "host", "-e", f"PORT={port}", "-e", f"ACTIONPROXY_HOST={HOST}"] if host_network
                   else ["-p", f"{HOST}:{port}:8080"])
        client = subprocess.Popen(
            [DOCKER, "run", "-d", "--name", name, "--label", "actionproxy-bench=images", *network,
             target.image, *target.command(port, host_network)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return name, client

    def remove(self, name: str) -> None:
        docker("rm", "-f", "-v", name, check=False)
        self.names.discard(name)

    def close(self) -> None:
        for name in list(self.names):
            self.remove(name)


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, object]:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    raw = response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw


def wait_serving(port: int, name: str, client: subprocess.Popen, started: float,
                 any_status: bool = False) -> None:
    """GET /healthz until 200 (any answer with `any_status`); fail with the container's logs
    when it cannot start."""
    while True:
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                if response.status == 200 or any_status:
                    return
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            pass
        if client.poll() not in (None, 0):
            raise RuntimeError(f"docker run failed: {client.stderr.read().decode().strip()[:500]}")
        if time.perf_counter() - started > START_CAP:
            logs = docker("logs", name, check=False)
            raise RuntimeError(f"{name} did not serve within {START_CAP} s: {logs.stdout[-500:]}{logs.stderr[-500:]}")
        time.sleep(0.005)


def _first_result(port: int, target: Target, init: dict | None, expect_run: object) -> None:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        if init is not None:
            status, body = _post(conn, "/init", json.dumps(init).encode())
            if (status, body) != (200, {"ok": True}):
                raise RuntimeError(f"{target.name}: /init answered {status} {body!r:.300}")
        status, body = _post(conn, "/run", RUN_BODY)
        if status != 200 or not _matches(expect_run, body):
            raise RuntimeError(f"{target.name}: /run answered {status} {body!r:.300}")
    finally:
        conn.close()


def cold_start(target: Target, containers: Containers, host_network: bool) -> dict[str, float]:
    """Seconds from spawning `docker run -d` to: the client's exit (the container started),
    serving (GET /healthz answered), the first result."""
    port = free_port()
    started = time.perf_counter()
    name, client = containers.spawn(target, port, host_network)
    try:
        exited: list[float] = []  # when the client exits, seen by a thread blocked in wait()
        watcher = threading.Thread(target=lambda: exited.append((client.wait(), time.perf_counter())[1]))
        watcher.start()
        wait_serving(port, name, client, started, any_status=target.reference)
        listening = time.perf_counter() - started
        if not target.reference:
            _first_result(port, target, target.cold_init, target.ok)
        first_result = time.perf_counter() - started
        watcher.join(30)
        if client.returncode != 0:
            raise RuntimeError(f"docker run failed: {client.stderr.read().decode().strip()[:500]}")
        return {"docker_run_returned": exited[0] - started, "listening": listening, "first_result": first_result}
    finally:
        if client.poll() is None:
            client.wait(30)
        client.stdout.close()
        client.stderr.close()
        containers.remove(name)


def init_to_first_result(target: Target, containers: Containers) -> float:
    """Seconds from sending /init to the first /run result, in a fresh container that serves."""
    port = free_port()
    name, client = containers.spawn(target, port)
    try:
        if client.wait(60) != 0:
            raise RuntimeError(f"docker run failed: {client.stderr.read().decode().strip()[:500]}")
        wait_serving(port, name, client, time.perf_counter())
        started = time.perf_counter()
        _first_result(port, target, target.init, target.ok if target.init_ok is None else target.init_ok)
        return time.perf_counter() - started
    finally:
        client.stdout.close()
        client.stderr.close()
        containers.remove(name)


def _ms(samples: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(samples) * 1e3, 1), "min_ms": round(min(samples) * 1e3, 1),
            "max_ms": round(max(samples) * 1e3, 1), "n": len(samples)}


def _size(image: str) -> int | None:
    done = docker("image", "inspect", "-f", "{{.Size}}", image, check=False)
    return int(done.stdout.strip()) if done.returncode == 0 else None


def _mb(size: int | None) -> float | None:
    return None if size is None else round(size / 1e6, 1)


def build_examples() -> None:
    for target in TARGETS:
        if target.name.startswith("example/"):
            folder = EXAMPLES / target.name.split("/", 1)[1]
            print(f"building {target.image} from {folder.relative_to(ROOT)}", flush=True)
            docker("build", "-q", "-t", target.image, str(folder), timeout=900)


def _cell(stats: dict | None, digits: int = 0) -> str:
    return "-" if stats is None else f"{stats['median_ms']:.{digits}f} ms"


def print_table(report: dict) -> None:
    header = ("image", "size MB", "adds MB", "run -d returned", "serving (-p)", "1st result (-p)",
              "1st result (host net)", "init->1st result")
    rows = [header]
    for entry in report["images"].values():
        published, host = entry["cold_start"]["published"], entry["cold_start"]["host"]
        rows.append((entry["image"] + (" (http.server)" if entry["kind"] == "reference" else ""),
                     f"{entry['size_mb']:.0f}", "" if entry["adds_mb"] is None else f"{round(entry['adds_mb'])}",
                     _cell(published["docker_run_returned"]), _cell(published["listening"]),
                     _cell(published["first_result"]), _cell(host["first_result"]),
                     _cell(entry["init_to_first_result"], 1)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(w) if j == 0 else cell.rjust(w) for j, (cell, w) in enumerate(zip(row, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print(f"medians. cold start ({report['cold_rounds']} rounds): from spawning `docker run -d` to the first /run "
          "result (python/nodejs: /init + /run; blackbox: /run of the stub or the image's exec), port published "
          "on 127.0.0.1 (-p) or in the host's network; the reference row's first result is its first HTTP answer. "
          f"init->1st result: {report['init_rounds']} fresh containers, already serving.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold-rounds", type=int, default=5)
    parser.add_argument("--init-rounds", type=int, default=10)
    args = parser.parse_args()
    if shutil.which(DOCKER) is None:
        print(f"images: no docker client ({DOCKER})", file=sys.stderr)
        return 2
    missing = [t.image for t in TARGETS if not t.name.startswith("example/") and _size(t.image) is None]
    if missing:
        print(f"images: missing {', '.join(missing)}: run `make images` first", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind: the finally blocks remove containers
    build_examples()
    server = docker("version", "-f", "{{.Server.Version}}").stdout.strip()
    cold: dict[tuple[str, str], list[dict[str, float]]] = {(t.name, n): [] for t in TARGETS for n in NETWORKS}
    init: dict[str, list[float]] = {t.name: [] for t in TARGETS if t.init is not None}
    containers = Containers()
    try:
        for i in range(args.cold_rounds):
            print(f"cold start, round {i + 1}/{args.cold_rounds}", flush=True)
            for network in NETWORKS:
                for target in TARGETS:
                    cold[target.name, network].append(cold_start(target, containers, network == "host"))
        for i in range(args.init_rounds):
            print(f"init to first result, round {i + 1}/{args.init_rounds}", flush=True)
            for target in TARGETS:
                if target.init is not None:
                    init[target.name].append(init_to_first_result(target, containers))
    finally:
        containers.close()
    images = {}
    for target in TARGETS:
        size = _size(target.image)
        base = None if target.base is None else _size(target.base)
        images[target.name] = {
            "image": target.image,
            "kind": "reference" if target.reference else "proxy",
            "base": target.base,
            "size_mb": _mb(size),
            "base_size_mb": _mb(base),
            "adds_mb": None if size is None or base is None else _mb(size - base),
            "cold_start": {network: {metric: _ms([sample[metric] for sample in cold[target.name, network]])
                                     for metric in ("docker_run_returned", "listening", "first_result")}
                           for network in NETWORKS},
            "cold_start_request": ("first HTTP answer" if target.reference else
                                   "/init + /run" if target.cold_init is not None else "/run (exec in the image)"),
            "init_to_first_result": _ms(init[target.name]) if target.name in init else None,
            "init_request": (None if target.init is None else
                             ("/init {}" if not target.init else "/init with source") + " + /run"),
        }
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "kernel": platform.release(),
                 "docker_server": server},
        "cold_rounds": args.cold_rounds,
        "init_rounds": args.init_rounds,
        "networks": {"published": f"-p {HOST}:PORT:8080 (bridge network)",
                     "host": f"--network host, the server listening on {HOST}:PORT"},
        "images": images,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "images-latest.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print_table(report)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
