"""Blackbox runtime throughput: one process per activation (exec mode) and action loops.

    .venv/bin/python bench/blackbox.py [--seconds N]

(a) exec mode, the dockerskeleton's model run in parallel: a `#!/bin/sh` exec and a tiny C
    binary (compiled here into a temp folder when gcc is there), at c=1 and c=16. The
    dockerskeleton itself serves ~350 activations/s on this machine (it runs them one at a
    time); the target is 10x that at c=16.
(b) action-loop mode (ACTIONPROXY_BLACKBOX_MODE=loop in the /init env): a bash v1 loop and a
    tiny C v1 loop, at c=1 and c=16.

Like `make bench`: the proxy and every process it starts on one CPU, wrk on another, each
point checked for a correct answer first. With gcc, each exec also gets a spawn floor: a C
loop that posix_spawns it, reads its stdout and waits for it, one at a time on the proxy's
CPU: what any process-per-activation runtime could reach there with no overhead at all. CPU
time per request is split into the proxy itself and its children (exited execs are counted
through the proxy's reaped-children times).
Writes bench/results/blackbox-latest.json and prints a table.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import orjson
import psutil

import loadgen
from servers import HOST, ROOT, VENV_BIN, cpus, free_port, log_tail, machine, post, stop_tree

RESULTS = Path(__file__).resolve().parent / "results"
SKELETON_RPS = 350  # the dockerskeleton on this machine, exec mode (serialised)
TARGET_RPS = 10 * SKELETON_RPS
ANSWER = {"ok": True}

SH_EXEC = """#!/bin/sh
echo '{"ok":true}'
"""

C_EXEC = r"""
#include <stdio.h>
int main(void) {
    fputs("{\"ok\":true}\n", stdout);
    return 0;
}
"""

BASH_LOOP = """#!/bin/bash
while read -r line; do
  echo '{"ok":true}' >&3
done
"""

C_LOOP = r"""
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    FILE *results = fdopen(3, "w");
    char *line = NULL;
    size_t size = 0;
    if (results == NULL) return 1;
    if (getenv("__OW_WAIT_FOR_ACK")) { fputs("{\"ok\":true}\n", results); fflush(results); }
    while (getline(&line, &size, stdin) > 0) {
        fputs("{\"ok\":true}\n", results);
        fflush(results);
    }
    return 0;
}
"""

# posix_spawn + read stdout to EOF + waitpid, N times: the kernel's cost of one activation.
SPAWN_FLOOR = r"""
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
extern char **environ;
int main(int argc, char **argv) {
    int n = atoi(argv[2]);
    char buf[4096], *args[] = {argv[1], "{}", NULL};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < n; i++) {
        int out[2], status;
        pid_t pid;
        posix_spawn_file_actions_t fa;
        if (pipe(out) != 0) return 1;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        posix_spawn_file_actions_addclose(&fa, out[0]);
        if (posix_spawn(&pid, argv[1], &fa, NULL, args, environ) != 0) return 1;
        close(out[1]);
        while (read(out[0], buf, sizeof buf) > 0) {}
        close(out[0]);
        waitpid(pid, &status, 0);
        posix_spawn_file_actions_destroy(&fa);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("%.1f\n", n / ((b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9));
    return 0;
}
"""


# ---------------------------------------------------------------- actions

def compile_c(source: str, name: str, folder: Path) -> tuple[bytes, str] | None:
    """The binary (static when the C library allows it) and how it was built; None without gcc."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    src = folder / f"{name}.c"
    src.write_text(source)
    out = folder / name
    for flags in (["-O2", "-static"], ["-O2"]):
        done = subprocess.run([gcc, *flags, "-o", str(out), str(src)], capture_output=True, text=True)
        if done.returncode == 0:
            return out.read_bytes(), " ".join(flags)
    raise RuntimeError(f"cannot compile {name}: {done.stderr}")


def spawn_floor(action: dict, folder: Path, cpu: int) -> float | None:
    """Spawns per second of this exec, one after another on `cpu`, by a C loop; None without gcc."""
    spawner = folder / "spawn_floor"
    if not spawner.exists() and compile_c(SPAWN_FLOOR, "spawn_floor", folder) is None:
        return None
    spawner.chmod(0o755)
    exe = folder / (action["name"].replace(" ", "_") + ".exe")
    exe.write_bytes(base64.b64decode(action["code"]) if action["binary"] else action["code"].encode())
    exe.chmod(0o755)
    rates = []
    for _ in range(3):  # the best of three: the floor, not the noise
        done = subprocess.run(["taskset", "-c", str(cpu), str(spawner), str(exe), "1000"], capture_output=True,
                              text=True, check=True, cwd=folder)
        rates.append(float(done.stdout))
    return max(rates)


def actions(folder: Path) -> list[dict]:
    """Every action to measure: name, mode, code for /init (text or binary) and a note."""
    found = [{"name": "exec sh", "mode": "exec", "code": SH_EXEC, "binary": False, "note": "#!/bin/sh"},
             {"name": "loop bash", "mode": "loop", "code": BASH_LOOP, "binary": False, "note": "#!/bin/bash v1"}]
    for name, mode, source in (("exec C", "exec", C_EXEC), ("loop C", "loop", C_LOOP)):
        built = compile_c(source, name.replace(" ", "_"), folder)
        if built is None:
            print(f"  {name}: skipped (no gcc)", flush=True)
            continue
        binary, flags = built
        found.append({"name": name, "mode": mode, "code": base64.b64encode(binary).decode(), "binary": True,
                      "note": f"gcc {flags}, {len(binary)} bytes"})
    order = ["exec sh", "exec C", "loop bash", "loop C"]
    return sorted(found, key=lambda a: order.index(a["name"]))


# ---------------------------------------------------------------- server

class BlackboxServer:
    """`actionproxy serve --runtime blackbox` pinned to one CPU, with its own temp folder."""

    def __init__(self, cpu: int) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}/run"
        self.tmp = tempfile.TemporaryDirectory(prefix="bench-blackbox-")
        env = dict(os.environ, ACTIONPROXY_HOST=HOST, TMPDIR=self.tmp.name)
        env.pop("ACTIONPROXY_BLACKBOX_MODE", None)
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            ["taskset", "-c", str(cpu), str(VENV_BIN / "actionproxy"), "serve", "--runtime", "blackbox",
             "--port", str(self.port)],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        self._wait_listening()

    def _wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the proxy exited with {self.process.returncode}: {self.stderr_tail()}")
            try:
                post(self.port, "/run", b'{"value":{}}')  # runs the stub: the proxy is up
                return
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected):
                time.sleep(0.005)
        raise TimeoutError(f"the proxy did not answer within {timeout} s")

    def init(self, action: dict) -> None:
        env = {"ACTIONPROXY_BLACKBOX_MODE": "loop"} if action["mode"] == "loop" else {}
        body = orjson.dumps({"value": {"code": action["code"], "binary": action["binary"], "main": "main",
                                       "env": env}})
        status, answer = post(self.port, "/init", body, timeout=30)
        if status != 200:
            raise RuntimeError(f"/init of {action['name']}: {status} {answer[:300]!r} {self.stderr_tail()}")

    def check(self, body: bytes) -> None:
        status, answer = post(self.port, "/run", body, timeout=30)
        if status != 200 or orjson.loads(answer) != ANSWER:
            raise RuntimeError(f"/run answers {status} {answer[:300]!r} {self.stderr_tail()}")

    def cpu_seconds(self) -> dict[str, float]:
        """The proxy's own CPU time, and its children's: reaped ones plus those alive now."""
        front = psutil.Process(self.process.pid)
        times = front.cpu_times()
        alive = 0.0
        for child in front.children(recursive=True):
            try:
                t = child.cpu_times()
                alive += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return {"proxy": times.user + times.system,
                "children": times.children_user + times.children_system + alive}

    def stderr_tail(self, size: int = 2000) -> str:
        return log_tail(self.log, size)

    def stop(self) -> None:
        stop_tree(self.process)
        self.log.close()
        self.tmp.cleanup()


# ---------------------------------------------------------------- measuring

def run_body() -> bytes:
    """A /run body as OpenWhisk sends it, with a deadline an hour away (it is never hit)."""
    deadline = str(int(time.time() * 1000) + 3_600_000)
    return orjson.dumps({"value": {"name": "Ada", "n": 1}, "namespace": "guest", "action_name": "blackbox",
                         "activation_id": "0123456789abcdef0123456789abcdef", "deadline": deadline})


def measure(wrk: str, server: BlackboxServer, body: Path, connections: int, seconds: int,
            client_cpu: int) -> dict:
    before = server.cpu_seconds()
    point = loadgen.run(wrk, server.url, body, connections, seconds, client_cpu)
    after = server.cpu_seconds()
    cpu_us = {part: round((after[part] - before[part]) / max(point.requests, 1) * 1e6) for part in after}
    return point.as_dict() | {"cpu_us_per_request": cpu_us}


def verdict(point: dict) -> str:
    """PASS/MISS against the target for exec mode at c=16; loop mode has no target."""
    if point["mode"] != "exec" or point["connections"] != 16:
        return ""
    return "PASS" if point["rps"] >= TARGET_RPS and point["errors"] == 0 else "MISS"


def summary(results: dict) -> str:
    rows = [f"{'action':<11}{'c':>4}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
            f"{'proxy us':>10}{'child us':>10}{'vs skeleton':>13}{'of floor':>10}  target {TARGET_RPS}/s"]
    for p in results["points"]:
        cpu = p["cpu_us_per_request"]
        ratio = f"{p['rps'] / SKELETON_RPS:.1f}x" if p["mode"] == "exec" else ""
        floor = f"{p['of_spawn_floor']:.0%}" if "of_spawn_floor" in p else ""
        rows.append(f"{p['action']:<11}{p['connections']:>4}{p['rps']:>10.0f}{p['p50_ms']:>9.2f}"
                    f"{p['p99_ms']:>9.2f}{p['errors']:>8}{cpu['proxy']:>10}{cpu['children']:>10}"
                    f"{ratio:>13}{floor:>10}  {p['verdict']}")
    floors = {name: a["spawn_floor_rps"] for name, a in results["actions"].items() if "spawn_floor_rps" in a}
    if floors:
        best = max(floors.values())
        rows.append("")
        rows.append("spawn floor (C posix_spawn/read/wait loop, one CPU, no proxy): "
                    + ", ".join(f"{name} {rps}/s" for name, rps in floors.items())
                    + (f"; the {TARGET_RPS}/s target is above it on this CPU" if best < TARGET_RPS else ""))
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each load point (default 5)")
    args = parser.parse_args()
    server_cpu, client_cpu = cpus()
    os.sched_setaffinity(0, {client_cpu})
    wrk = loadgen.ensure_wrk()
    started = time.monotonic()
    results: dict = {"timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "machine": machine(),
                     "settings": {"seconds": args.seconds, "server_cpu": server_cpu, "client_cpu": client_cpu,
                                  "skeleton_rps": SKELETON_RPS, "target_rps": TARGET_RPS},
                     "actions": {}, "points": []}
    print(f"blackbox: {args.seconds} s per point, proxy on CPU {server_cpu}, wrk on CPU {client_cpu}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-blackbox-build-") as tmp:
        folder = Path(tmp)
        body = folder / "run.json"
        body.write_bytes(run_body())
        for action in actions(folder):
            results["actions"][action["name"]] = {"mode": action["mode"], "note": action["note"]}
            floor = spawn_floor(action, folder, server_cpu) if action["mode"] == "exec" else None
            if floor is not None:
                results["actions"][action["name"]]["spawn_floor_rps"] = round(floor)
                print(f"  {action['name']:<10} spawn floor {floor:8.0f} spawns/s (C posix_spawn loop on CPU "
                      f"{server_cpu})", flush=True)
            server = BlackboxServer(server_cpu)
            try:
                server.init(action)
                server.check(body.read_bytes())
                loadgen.run(wrk, server.url, body, 16, 1, client_cpu)  # warm up: the loop pool grows here
                for connections in (1, 16):
                    point = {"action": action["name"], "mode": action["mode"], "connections": connections}
                    point |= measure(wrk, server, body, connections, args.seconds, client_cpu)
                    point["verdict"] = verdict(point)
                    if floor is not None:
                        point["of_spawn_floor"] = round(point["rps"] / floor, 2)
                    results["points"].append(point)
                    print(f"  {action['name']:<10} c={connections:<3}{point['rps']:8.0f} req/s  "
                          f"p99 {point['p99_ms']:7.2f} ms  errors {point['errors']}  {point['verdict']}",
                          flush=True)
            finally:
                server.stop()
    results["settings"]["wall_seconds"] = round(time.monotonic() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "blackbox-latest.json"
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    print()
    print(summary(results))
    print(f"\nresults: {out.relative_to(ROOT)} ({results['settings']['wall_seconds']} s)")


if __name__ == "__main__":
    main()
