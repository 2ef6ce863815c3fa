"""Cold start, as a platform sees it: a fresh process each round, measured from the outside.

* listening: from spawning the server until its first HTTP response of any status (the
  proxy answers /run before /init with 500; that still means it is serving);
* init to first result: from sending /init with the action's source until the first /run
  result arrives, on one keep-alive connection, sent as soon as the server is listening,
  as an invoker would; and spawn to first result, the two added up: the launcher starts
  beside the proxy on the same CPU, so the sooner the port answers, the more of the
  launcher's start is left for /init to wait for, and only the sum is what a platform waits.
* start to first result: a dedicated server (`serve --init FILE`, as an image with its
  function baked in starts) from spawning until the first /run answers 200, polled as soon as
  it may connect, for each runtime; the issue's goal is to beat the bare server's listening.
The bare server gets the listening measurement too, as the floor for an aiohttp process.
"""

from __future__ import annotations

import http.client
import statistics
import time
from pathlib import Path

import orjson

from servers import BENCH, HOST, Server

RUN_BODY = orjson.dumps({"value": {"name": "Ada"}, "activation_id": "cold"})
# (runtime, function) started with --init, as a dedicated image starts
DEDICATED = {"python-sync": ("python", BENCH / "actions" / "echo_sync.py"),
             "python-async": ("python", BENCH / "actions" / "echo_async.py"),
             "nodejs": ("nodejs", BENCH / "actions" / "echo.js"),
             "blackbox": ("blackbox", BENCH / "actions" / "echo.sh")}


def _timed_post(conn: http.client.HTTPConnection, path: str, body: bytes) -> bytes:
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {data[:200]!r}")
    return data


def _init_and_run(port: int, action: Path) -> tuple[float, float]:
    """Seconds for /init alone and for /init plus the first /run, on one connection."""
    init_body = orjson.dumps({"value": {"code": action.read_text(), "main": "main"}})
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        started = time.perf_counter()
        _timed_post(conn, "/init", init_body)
        initialized = time.perf_counter()
        _timed_post(conn, "/run", RUN_BODY)
        return initialized - started, time.perf_counter() - started
    finally:
        conn.close()


def _ms(samples: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(samples) * 1e3, "min_ms": min(samples) * 1e3,
            "max_ms": max(samples) * 1e3, "n": len(samples)}


def measure(actions: dict[str, Path], rounds: int, cpu: int) -> dict[str, dict]:
    """Per server kind: listening; per proxy action: listening, /init alone, /init to first result."""
    samples: dict[str, dict[str, list[float]]] = {"bare": {"listening": []}}
    for name in actions:
        samples[name] = {"listening": [], "init": [], "init_to_first_result": [], "spawn_to_first_result": []}
    for name in DEDICATED:
        samples[f"dedicated {name}"] = {"start_to_first_result": []}
    for _ in range(rounds):
        server = Server("bare", cpu)
        try:
            samples["bare"]["listening"].append(server.wait_listening())
        finally:
            server.stop()
        for name, action in actions.items():
            server = Server("proxy", cpu)
            try:
                listening = server.wait_listening()
                init, first_result = _init_and_run(server.port, action)
            finally:
                server.stop()
            samples[name]["listening"].append(listening)
            samples[name]["init"].append(init)
            samples[name]["init_to_first_result"].append(first_result)
            samples[name]["spawn_to_first_result"].append(listening + first_result)
        for name, (runtime, action) in DEDICATED.items():
            server = Server("proxy", cpu, action, runtime)
            try:
                samples[f"dedicated {name}"]["start_to_first_result"].append(server.wait_listening())
                server.wait_ready()  # the first answer was a result, not an error
            finally:
                server.stop()
    return {kind: {metric: _ms(values) for metric, values in metrics.items()}
            for kind, metrics in samples.items()}
