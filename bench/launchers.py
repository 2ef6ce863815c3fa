"""`--only launchers`: what ACTIONPROXY_LAUNCHERS=N costs an async action (Python `async def
main` and Node.js echo): throughput and p99 at c=16 and c=256, as a ratio to the same action
on one launcher measured alternately in the same run; start to first result (the N-1 extra
launchers load the action before the first answer); and the memory of the whole tree (PSS, so
pages shared between launchers count once). All servers share one CPU, like a 1-CPU container.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import psutil

import loadgen
from servers import BENCH, Server

COUNTS = (1, 2, 4)
ACTIONS = {"python": BENCH / "actions" / "echo_async.py", "nodejs": BENCH / "actions" / "echo.js"}
CONNECTIONS = (16, 256)
STARTS = 5  # starts per count, alternating, for the median start to first result


def _server(runtime: str, count: int, cpu: int) -> Server:
    return Server("proxy", cpu, ACTIONS[runtime], runtime, env={"ACTIONPROXY_LAUNCHERS": str(count)})


def tree_pss(pid: int) -> int:
    """Proportional memory of a process and everything below it."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except psutil.Error:
            pass
    return total


def start_ms(runtime: str, cpu: int) -> dict[int, float]:
    samples: dict[int, list[float]] = {count: [] for count in COUNTS}
    for _ in range(STARTS):
        for count in COUNTS:
            server = _server(runtime, count, cpu)
            try:
                server.wait_ready()
                samples[count].append(server.wait_listening() * 1000)
            finally:
                server.stop()
    return {str(count): round(statistics.median(values), 1) for count, values in samples.items()}


def measure(wrk: str, body: Path, seconds: int, server_cpu: int, client_cpu: int) -> dict:
    results: dict = {}
    for runtime in ACTIONS:
        servers = {count: _server(runtime, count, server_cpu) for count in COUNTS}
        try:
            for server in servers.values():
                server.wait_ready()
                loadgen.run(wrk, server.url, body, 256, 2, client_cpu)  # warm up
            points = {}
            for connections in CONNECTIONS:
                runs = {count: loadgen.run(wrk, server.url, body, connections, seconds, client_cpu)
                        for count, server in servers.items()}
                points[f"c={connections}"] = {
                    str(count): {"rps": round(run.rps), "p99_ms": run.p99_ms, "errors": run.errors,
                            "ratio": round(run.rps / runs[1].rps, 3)} for count, run in runs.items()}
                for count, run in runs.items():
                    print(f"  launchers {runtime:<7} c={connections:<4} N={count}  {run.rps:8.0f} req/s  "
                          f"x{run.rps / runs[1].rps:.2f}  p99 {run.p99_ms:7.2f} ms", flush=True)
            memory = {str(count): round(tree_pss(server.process.pid) / 2**20, 1) for count, server in servers.items()}
        finally:
            for server in servers.values():
                server.stop()
        results[runtime] = {"points": points, "pss_mib": memory, "start_to_first_result_ms": start_ms(runtime, server_cpu)}
        print(f"  launchers {runtime:<7} PSS MiB {memory}  start to first result ms "
              f"{results[runtime]['start_to_first_result_ms']}", flush=True)
    return results
