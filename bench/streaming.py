"""Streamed results (Knative mode): first-chunk latency and the throughput of a 10 MB stream,
against a bare aiohttp + uvloop handler that writes the same NDJSON lines itself.

Servers (bare, and the proxy with a Python generator, a Python async generator and a Node.js
async generator) run on the server CPU, this client on the other; the servers take turns
request by request, so each ratio compares neighbours in time. First chunk: the time from
sending a request for one small chunk to reading its line. Throughput: 1,000 chunks of
10 KB (10 MB of JSON), read to the end.
"""

from __future__ import annotations

import http.client
import statistics
import time

import orjson

from servers import BENCH, HOST, Server

STREAMERS = {"proxy-sync": ("python", BENCH / "actions" / "stream_sync.py"),
             "proxy-async": ("python", BENCH / "actions" / "stream_async.py"),
             "proxy-nodejs": ("nodejs", BENCH / "actions" / "stream.js")}
BIG = {"n": 1000, "size": 10_000}
SMALL = {"n": 1, "size": 10}


def request(port: int, params: dict) -> tuple[float, float, int]:
    """(seconds to the first line, seconds to the end, bytes read) of one streamed answer."""
    connection = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        started = time.perf_counter()
        connection.request("POST", "/", orjson.dumps(params), {"Content-Type": "application/json"})
        response = connection.getresponse()
        size = len(response.readline())
        first = time.perf_counter() - started
        while chunk := response.read(1 << 16):
            size += len(chunk)
        if response.status != 200:
            raise RuntimeError(f"POST / answered {response.status}")
        return first, time.perf_counter() - started, size
    finally:
        connection.close()


def ready(server: Server, limit: float = 30.0) -> None:
    server.wait_listening(limit)
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        try:
            request(server.port, SMALL)
            return
        except (RuntimeError, OSError):
            time.sleep(0.05)
    raise TimeoutError(f"{server.kind} does not stream: {server.stderr_tail()}")


def measure(server_cpu: int, rounds: int) -> dict:
    servers = {"bare": Server("bare", server_cpu, options=("--stream",))}
    try:
        for name, (runtime, action) in STREAMERS.items():
            servers[name] = Server("proxy", server_cpu, action, runtime, env={"__OW_RUNTIME_PLATFORM": "knative"})
        for server in servers.values():
            ready(server)
        firsts: dict[str, list[float]] = {name: [] for name in servers}
        walls: dict[str, list[float]] = {name: [] for name in servers}
        sizes: dict[str, int] = {}
        for _ in range(rounds * 4):
            for name, server in servers.items():
                firsts[name].append(request(server.port, SMALL)[0])
        for _ in range(rounds):
            for name, server in servers.items():
                _, wall, sizes[name] = request(server.port, BIG)
                walls[name].append(wall)
    finally:
        for server in servers.values():
            server.stop()
    results = {}
    for name in servers:
        first_ms = statistics.median(firsts[name]) * 1000
        mb_s = sizes[name] / statistics.median(walls[name]) / 1e6
        results[name] = {"first_chunk_ms": round(first_ms, 2), "stream_mb_s": round(mb_s, 1),
                         "stream_bytes": sizes[name]}
    bare = results["bare"]
    for name, result in results.items():
        result["first_chunk_ratio"] = round(result["first_chunk_ms"] / bare["first_chunk_ms"], 2)
        result["throughput_ratio"] = round(result["stream_mb_s"] / bare["stream_mb_s"], 2)
        print(f"  {name:<14} first chunk {result['first_chunk_ms']:6.2f} ms ({result['first_chunk_ratio']:.2f}x bare)"
              f"   10 MB stream {result['stream_mb_s']:6.1f} MB/s ({result['throughput_ratio']:.2f}x bare)",
              flush=True)
    return results
