"""`make bench`: echo /run throughput and latency, large payloads, cold start, and 10,000 in flight.

The proxy (async action, sync action on forked workers, Node.js action) is measured against a bare
aiohttp + uvloop server in the same run, point by point, so that the ratios hold on a noisy
machine even when the absolute numbers do not. The server under test and everything it starts
run on one CPU, like a 1-CPU function container; wrk and this script (the in-flight client)
run on another. `--only inflight` (repeatable: load, coldstart, inflight, streaming, launchers)
runs just those parts; `launchers` (not in the default run) prices ACTIONPROXY_LAUNCHERS.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson

import coldstart
import inflight
import launchers
import loadgen
import report
import streaming
from servers import BENCH, ROOT, Server, cpus, machine

ACTIONS = {"proxy-async": BENCH / "actions" / "echo_async.py",
           "proxy-sync": BENCH / "actions" / "echo_sync.py"}
# under load, Node.js too: (runtime, echo action) per proxy server
LOAD_ACTIONS = {name: ("python", action) for name, action in ACTIONS.items()} | {
    "proxy-node": ("nodejs", BENCH / "actions" / "echo.js")}
LARGE_KIB = 256
# (label, body, connections): small echo at three concurrencies, then 256 KiB at c=8 in two
# shapes, because JSON parsing dominates one and moving bytes dominates the other
STRING_KIB = 1024  # issue 10's big-payload point: a 1 MiB string
POINTS = [("c=1", "small", 1), ("c=16", "small", 16), ("c=256", "small", 256),
          (f"{LARGE_KIB}KiB records c=8", "records", 8), ("1MiB string c=8", "string", 8)]
PARTS = ("load", "coldstart", "inflight", "streaming", "launchers")


def run_body(value: object) -> bytes:
    """A /run body as OpenWhisk sends it, with a deadline an hour away (it is never hit)."""
    deadline = str(int(time.time() * 1000) + 3_600_000)
    return orjson.dumps({"value": value, "namespace": "guest", "action_name": "echo",
                         "activation_id": "0123456789abcdef0123456789abcdef", "deadline": deadline})


def records(kib: int) -> dict:
    """About `kib` KiB of small JSON records, like a typical API payload."""
    items, size, i = [], 0, 0
    while size < kib * 1024:
        item = {"id": i, "name": f"item-{i}", "tags": ["alpha", "beta"], "score": i * 0.5, "ok": i % 2 == 0}
        items.append(item)
        size += len(orjson.dumps(item)) + 1
        i += 1
    return {"items": items}


def write_bodies(directory: Path) -> dict[str, Path]:
    values = {"small": {"name": "Ada", "n": 1}, "records": records(LARGE_KIB),
              "string": {"s": "x" * STRING_KIB * 1024}}
    paths = {}
    for name, value in values.items():
        paths[name] = directory / f"{name}.json"
        paths[name].write_bytes(run_body(value))
    return paths


def measure(wrk: str, server: Server, body: Path, connections: int, seconds: int, client_cpu: int) -> dict:
    """One wrk point plus the server's CPU time per request, split into front and children."""
    before = server.cpu_seconds()
    point = loadgen.run(wrk, server.url, body, connections, seconds, client_cpu)
    after = server.cpu_seconds()
    cpu_us = {part: round((after[part] - before[part]) / max(point.requests, 1) * 1e6) for part in after}
    return point.as_dict() | {"cpu_us_per_request": cpu_us}


def load(wrk: str, servers: dict[str, Server], bodies: dict[str, Path], seconds: int,
         client_cpu: int) -> list[dict]:
    """Every point for every server back to back, so each ratio compares neighbours in time."""
    for server in servers.values():  # warm up: sync mode forks its worker pool here
        loadgen.run(wrk, server.url, bodies["small"], 256, 2, client_cpu)
    points = []
    for label, body, connections in POINTS:
        point: dict = {"label": label, "body": body, "body_bytes": bodies[body].stat().st_size,
                       "connections": connections, "servers": {}}
        for name, server in servers.items():
            point["servers"][name] = measure(wrk, server, bodies[body], connections, seconds, client_cpu)
            r = point["servers"][name]
            print(f"  {label:<22}{name:<13}{r['rps']:8.0f} req/s  p99 {r['p99_ms']:7.2f} ms  "
                  f"errors {r['errors']}", flush=True)
        points.append(point)
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each load point (default 5)")
    parser.add_argument("--rounds", type=int, default=10, help="cold starts per server kind (default 10)")
    parser.add_argument("--inflight-rounds", type=int, default=3,
                        help="in-flight runs per server, the median reported (default 3)")
    parser.add_argument("--only", action="append", choices=PARTS,
                        help="run only this part (repeatable; default: all of them)")
    args = parser.parse_args()
    parts = [part for part in PARTS if part in (args.only or PARTS[:-1])]
    server_cpu, client_cpu = cpus()
    os.sched_setaffinity(0, {client_cpu})
    wrk = loadgen.ensure_wrk() if {"load", "launchers"} & set(parts) else ""
    started = time.monotonic()
    results: dict = {"timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "machine": machine(),
                     "settings": {"parts": parts, "seconds": args.seconds, "rounds": args.rounds,
                                  "server_cpu": server_cpu, "client_cpu": client_cpu}}
    if "load" in parts:
        servers: dict[str, Server] = {}
        with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
            try:
                servers["bare"] = Server("bare", server_cpu)
                for name, (runtime, action) in LOAD_ACTIONS.items():
                    servers[name] = Server("proxy", server_cpu, action, runtime)
                for server in servers.values():
                    server.wait_ready()
                print(f"load: {args.seconds} s per point, servers on CPU {server_cpu}, wrk on CPU {client_cpu}",
                      flush=True)
                results["points"] = load(wrk, servers, write_bodies(Path(tmp)), args.seconds, client_cpu)
            finally:
                for server in servers.values():
                    server.stop()
        report.add_ratios(results["points"])
    if "coldstart" in parts:
        print(f"cold start: {args.rounds} rounds", flush=True)
        results["coldstart"] = coldstart.measure(ACTIONS, args.rounds, server_cpu)
    if "inflight" in parts:
        print(f"in flight: {inflight.N:,} x {inflight.WAIT_S:g} s, servers on CPU {server_cpu}, "
              f"asyncio client on CPU {client_cpu}", flush=True)
        results["inflight"] = inflight.measure(server_cpu, client_cpu, args.inflight_rounds)
    if "streaming" in parts:
        print(f"streaming (Knative): first chunk and a 10 MB stream, servers on CPU {server_cpu}", flush=True)
        results["streaming"] = streaming.measure(server_cpu, args.rounds)
    if "launchers" in parts:
        print(f"launchers: async actions on 1, 2 and 4 launchers, {args.seconds} s per point", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-bodies-") as tmp:
            small = write_bodies(Path(tmp))["small"]
            results["launchers"] = launchers.measure(wrk, small, args.seconds, server_cpu, client_cpu)
    results["targets"] = report.targets(results)
    results["settings"]["wall_seconds"] = round(time.monotonic() - started, 1)
    out = BENCH / "results"
    stamped = report.write_json(results, out)
    report.chart(results, out / "latest.png")
    print()
    print(report.summary(results))
    print(f"\nresults: {stamped.relative_to(ROOT)}, {(out / 'latest.png').relative_to(ROOT)} "
          f"({results['settings']['wall_seconds']} s)")


if __name__ == "__main__":
    main()
