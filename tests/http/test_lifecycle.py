"""The container's lifecycle: /healthz states, /metrics after activations of every outcome,
the drain at SIGTERM (nothing in flight is lost, new work gets 503, exit 0), and the debug
switch (activation lines on stderr, the language's inspector on ACTIONPROXY_DEBUG_PORT).

In a container the signal is `docker kill --signal TERM`: it reaches the image's PID 1 init,
which forwards it to the proxy, as `docker stop` and Kubernetes do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from conftest import SENTINEL, Proxy, free_port

TARGETS = ("host", "container")

SHUTTING_DOWN = "The container is shutting down and takes no new work: send it to another container."
EXHAUSTED = "The action exhausted its memory and was aborted."
POLLS = 1500  # bounded waits for a state to show, at 20 ms a poll


def get(proxy: Proxy, path: str) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(proxy.base + path, timeout=10) as response:
            status, raw, headers = response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        status, raw, headers = err.code, err.read(), dict(err.headers)
    text = raw.decode()
    return status, (json.loads(text) if headers.get("Content-Type", "").startswith("application/json") else text), headers


def health(proxy: Proxy, path: str = "/healthz") -> tuple[int, Any]:
    status, body, _ = get(proxy, path)
    return status, body


def until(probe, expected, what: str):
    """Poll `probe()` until it returns `expected`; return the last value either way."""
    value = probe()
    for _ in range(POLLS):
        if value == expected:
            break
        time.sleep(0.02)
        value = probe()
    assert value == expected, f"{what}: {value!r}"
    return value


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {"name{labels}": value}; checks every sample has HELP and TYPE."""
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            family = re.sub(r"(_bucket|_sum|_count)$", "", key.split("{")[0])
            assert family in typed or key.split("{")[0] in typed, f"no TYPE for {key}"
            samples[key] = float(value)
    return samples


def metrics(proxy: Proxy) -> dict[str, float]:
    status, text, headers = get(proxy, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(text)


def in_flight(proxy: Proxy) -> int:
    return int(metrics(proxy)["actionproxy_activations_in_flight"])


def send_sigterm(proxy: Proxy) -> None:
    if isinstance(proxy.process, subprocess.Popen):
        proxy.process.send_signal(signal.SIGTERM)
    else:
        client = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")
        subprocess.run([client, "kill", "--signal", "TERM", proxy.container_id],
                       check=True, capture_output=True, timeout=60)


def exit_status(proxy: Proxy) -> int:
    if isinstance(proxy.process, subprocess.Popen):
        return proxy.process.wait(120)
    code = proxy.process.poll()
    for _ in range(1200):
        if code is not None:
            break
        time.sleep(0.1)
        code = proxy.process.poll()
    assert code is not None, "the container did not stop"
    return code


def run_in_thread(proxy: Proxy, results: dict, key: Any, value: Any, **other: Any) -> threading.Thread:
    def call() -> None:
        results[key] = proxy.run(value, **other)

    thread = threading.Thread(target=call)
    thread.start()
    return thread


GATED = ("import asyncio, os\n"
         "async def main(args):\n"
         "    while not os.path.exists(args['gate']):\n"
         "        await asyncio.sleep(0.01)\n"
         "    return {'gate': args['gate']}\n")


# ---------------------------------------------------------------- /healthz

def test_healthz_is_ok_full_and_draining(start_proxy, tmp_path) -> None:
    """200 when it takes work (before init it takes /init), 503 "full" at the in-flight cap,
    503 "draining" after SIGTERM, while what runs still finishes."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_CONCURRENT": "2"})
    assert health(proxy) == (200, {"ok": True})
    assert health(proxy, "/readyz") == (503, {"ready": False, "reason": "not initialized"})
    assert proxy.init(GATED)[0] == 200
    assert health(proxy) == (200, {"ok": True})
    assert health(proxy, "/readyz") == (200, {"ready": True})

    full_gate, results = tmp_path / "full", {}
    threads = [run_in_thread(proxy, results, i, {"gate": str(full_gate)}) for i in range(2)]
    until(lambda: health(proxy), (503, {"ok": False, "reason": "full"}), "at the cap")
    assert health(proxy, "/readyz") == (503, {"ready": False, "reason": "full"})
    full_gate.touch()
    for thread in threads:
        thread.join(60)
    assert results == {i: (200, {"gate": str(full_gate)}) for i in range(2)}
    assert health(proxy) == (200, {"ok": True})

    drain_gate = tmp_path / "drain"
    last = run_in_thread(proxy, results, "last", {"gate": str(drain_gate)})
    until(lambda: in_flight(proxy), 1, "the activation in flight")
    send_sigterm(proxy)
    until(lambda: health(proxy), (503, {"ok": False, "reason": "draining"}), "after SIGTERM")
    assert health(proxy, "/readyz") == (503, {"ready": False, "reason": "draining"})
    drain_gate.touch()
    last.join(60)
    assert results["last"] == (200, {"gate": str(drain_gate)})
    assert exit_status(proxy) == 0


# ---------------------------------------------------------------- /metrics

OUTCOMES_ACTION = """
import asyncio, os
async def main(args):
    mode = args.get("mode")
    if mode == "error":
        return {"error": "bad input"}
    if mode == "raise":
        raise ValueError("boom")
    if mode == "not-a-dict":
        return 42
    if mode == "exit":
        os._exit(3)
    if mode == "hog":
        blob = bytearray(400 * 1024 * 1024)
        await asyncio.sleep(10)
        return {"len": len(blob)}
    if mode == "sleep":
        await asyncio.sleep(args["seconds"])
    if mode == "gate":
        while not os.path.exists(args["gate"]):
            await asyncio.sleep(0.01)
    return {"ok": True}
"""


def test_metrics_count_every_outcome(start_proxy, tmp_path) -> None:
    """Counters by outcome, the duration histogram, in-flight, init, cold start, restarts,
    memory kills, and the processes' CPU and memory, after activations of every kind."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_CONCURRENT": "2",
                             "ACTIONPROXY_MEMORY_LIMIT": str(200 * 1024 * 1024)})
    before = metrics(proxy)
    assert before['actionproxy_activations_total{outcome="success"}'] == 0
    assert "actionproxy_init_duration_seconds" not in before  # no init yet
    assert before["actionproxy_cold_start_seconds"] > 0
    assert proxy.init(OUTCOMES_ACTION)[0] == 200

    assert proxy.run({}) == (200, {"ok": True})
    assert proxy.run({"mode": "sleep", "seconds": 0.3}) == (200, {"ok": True})
    assert proxy.run({"mode": "error"}) == (200, {"error": "bad input"})
    assert proxy.run({"mode": "raise"}) == (200, {"error": "boom"})
    assert proxy.run({"mode": "not-a-dict"})[0] == 502
    status, body = proxy.run({"mode": "exit"})
    assert status == 400 and body["error"].startswith("command exited")
    assert proxy.run({}) == (200, {"ok": True})  # on the restarted launcher
    assert proxy.run({"mode": "hog"}) == (502, {"error": EXHAUSTED})
    assert proxy.run({}) == (200, {"ok": True})
    status, body = proxy.run({"mode": "sleep", "seconds": 10}, deadline=str(int(time.time() * 1000) + 300))
    assert status == 502 and "deadline" in body["error"]

    gate, results = tmp_path / "gate", {}
    threads = [run_in_thread(proxy, results, i, {"mode": "gate", "gate": str(gate)}) for i in range(2)]
    try:
        until(lambda: in_flight(proxy), 2, "two activations in flight")
        status, body = proxy.run({})
        assert status == 429 and "at most 2" in body["error"]
    finally:
        gate.touch()
        for thread in threads:
            thread.join(60)
    assert results == {0: (200, {"ok": True}), 1: (200, {"ok": True})}

    m = metrics(proxy)
    outcomes = {name: m[f'actionproxy_activations_total{{outcome="{name}"}}']
                for name in ("success", "application_error", "developer_error", "internal_error",
                             "timeout", "rejected")}
    assert outcomes == {"success": 6, "application_error": 2, "developer_error": 3,
                        "internal_error": 0, "timeout": 1, "rejected": 1}
    admitted = 12  # everything but the rejected one
    bounds = ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0",
              "2.5", "5.0", "10.0", "30.0", "60.0", "+Inf"]
    buckets = [m[f'actionproxy_activation_duration_seconds_bucket{{le="{le}"}}'] for le in bounds]
    assert buckets == sorted(buckets), "buckets are cumulative"
    assert buckets[-1] == m["actionproxy_activation_duration_seconds_count"] == admitted
    assert buckets[bounds.index("0.25")] <= admitted - 1  # the 0.3 s sleep is above 0.25 s
    assert m["actionproxy_activation_duration_seconds_sum"] >= 0.3
    assert m["actionproxy_activations_in_flight"] == 0
    assert m["actionproxy_init_duration_seconds"] > 0
    assert m["actionproxy_cold_start_seconds"] == before["actionproxy_cold_start_seconds"]
    assert m["actionproxy_launcher_restarts_total"] == 2  # after the exit and after the memory kill
    assert m["actionproxy_memory_kills_total"] == 1
    assert m["actionproxy_runtime_cpu_seconds_total"] > 0
    assert m["actionproxy_runtime_memory_bytes"] > 1024 * 1024
    assert m["actionproxy_proxy_cpu_seconds_total"] > 0
    assert m["actionproxy_proxy_memory_bytes"] > 1024 * 1024
    assert metrics(proxy)["actionproxy_runtime_cpu_seconds_total"] >= m["actionproxy_runtime_cpu_seconds_total"]


# ---------------------------------------------------------------- drain

DRAIN_N = 20
SLOW = {
    "python-async": ("python", "import asyncio\n"
                               "async def main(args):\n"
                               "    print('drain-log', args['i'])\n"
                               "    await asyncio.sleep(1.5)\n"
                               "    return {'i': args['i']}\n"),
    "python-sync": ("python", "import time\n"
                              "def main(args):\n"
                              "    print('drain-log', args['i'])\n"
                              "    time.sleep(1.5)\n"
                              "    return {'i': args['i']}\n"),
    "nodejs": ("nodejs", "async function main(args) {\n"
                         "  console.log('drain-log', args.i);\n"
                         "  await new Promise(r => setTimeout(r, 1500));\n"
                         "  return {i: args.i};\n"
                         "}\n"),
    "blackbox": ("blackbox", "#!/bin/sh\n"
                             "echo \"drain-log $(echo \"$1\" | sed 's/[^0-9]//g')\"\n"
                             "sleep 1.5\n"
                             "echo \"$1\"\n"),
}


@pytest.mark.parametrize("kind", list(SLOW))
def test_sigterm_drains_everything_in_flight(start_proxy, kind: str) -> None:
    """20 slow activations in flight at SIGTERM all finish with their own result and their
    own log block; meanwhile health says draining and a new /run gets 503; then exit 0, and
    the port is closed."""
    runtime, code = SLOW[kind]
    proxy = start_proxy(runtime)
    assert proxy.init(code)[0] == 200
    results: dict[int, Any] = {}
    threads = [run_in_thread(proxy, results, i, {"i": i}, activation_id=f"drain{i}") for i in range(DRAIN_N)]
    until(lambda: in_flight(proxy), DRAIN_N, "every activation in flight")
    send_sigterm(proxy)
    until(lambda: health(proxy), (503, {"ok": False, "reason": "draining"}), "after SIGTERM")

    status, body, _ = proxy.post("/run", {"value": {"i": 99}})
    assert (status, body) == (503, {"error": SHUTTING_DOWN})
    status, body, _ = proxy.post("/init", {"value": {"code": code}})
    assert (status, body) == (503, {"error": SHUTTING_DOWN})

    for thread in threads:
        thread.join(120)
    assert results == {i: (200, {"i": i}) for i in range(DRAIN_N)}
    assert exit_status(proxy) == 0
    out, err = proxy.streams()
    assert out.count(SENTINEL) == DRAIN_N and err.count(SENTINEL) == DRAIN_N
    for i in range(DRAIN_N):
        assert len(re.findall(rf"^drain-log {i}$", out, re.M)) == 1, out
    assert "SIGTERM: draining" in err and "drained: nothing in flight" in err
    if isinstance(proxy.process, subprocess.Popen):  # the listener is closed once it exited
        with pytest.raises(urllib.error.URLError) as refused:
            urllib.request.urlopen(proxy.base + "/healthz", timeout=5)
        assert isinstance(refused.value.reason, ConnectionRefusedError)


def test_drain_period_over_stops_what_still_runs(start_proxy) -> None:
    """Past ACTIONPROXY_DRAIN_SECONDS what still runs is stopped and answered with an error
    that says so (not dropped), its log block is written, and the exit is still 0."""
    proxy = start_proxy(env={"ACTIONPROXY_DRAIN_SECONDS": "1"})
    code = "import time\ndef main(args):\n    print('long', args['i'])\n    time.sleep(60)\n    return {}\n"
    assert proxy.init(code)[0] == 200
    results: dict[int, Any] = {}
    threads = [run_in_thread(proxy, results, i, {"i": i}) for i in range(3)]
    until(lambda: in_flight(proxy), 3, "the activations in flight")
    send_sigterm(proxy)
    for thread in threads:
        thread.join(120)
    for i in range(3):
        status, body = results[i]
        assert status == 502
        assert body["error"].startswith("The container shut down before the action finished")
        assert "ACTIONPROXY_DRAIN_SECONDS" in body["error"]
    assert exit_status(proxy) == 0
    out, err = proxy.streams()
    assert out.count(SENTINEL) == 3
    assert "3 activation(s) still running" in err


# ---------------------------------------------------------------- debug switch

def _debugpy_importable() -> bool:
    """Whether the launcher's interpreter (python3 on PATH, as in the harness) has debugpy."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('debugpy') is None)"
    return subprocess.run(["python3", "-c", probe], capture_output=True).returncode == 0


def test_debug_logs_activations_and_python_inspector(start_proxy, target: str) -> None:
    """ACTIONPROXY_DEBUG=1: init, activation start/end (id, status, duration) and the
    launcher's start on stderr; without debugpy a note says so and the runtime works."""
    proxy = start_proxy(env={"ACTIONPROXY_DEBUG": "1"})
    assert proxy.init("def main(args):\n    return {'echo': args}\n")[0] == 200
    assert proxy.run({"a": 1}, activation_id="dbg-1") == (200, {"echo": {"a": 1}})
    assert proxy.run({"a": 2}, activation_id="dbg-2") == (200, {"echo": {"a": 2}})
    _, err = proxy.streams()
    assert re.search(r"actionproxy: debug: launcher pid \d+ started", err), err
    assert re.search(r"actionproxy: debug: init \(main 'main', source, \d+ chars\): 200 in [\d.]+ ms", err), err
    for ident in ("dbg-1", "dbg-2"):
        assert f"actionproxy: debug: activation {ident} started" in err
        assert re.search(rf"actionproxy: debug: activation {ident} ended: 200 in [\d.]+ ms", err), err
    if target == "host" and not _debugpy_importable():
        assert "debugpy is not installed" in err
    if target == "container":  # the images carry no debugpy
        assert "debugpy is not installed" in err


def test_no_debug_lines_by_default(proxy: Proxy) -> None:
    assert proxy.init("def main(args):\n    return {}\n")[0] == 200
    assert proxy.run({}, activation_id="quiet") == (200, {})
    _, err = proxy.streams()
    assert "actionproxy: debug:" not in err


@pytest.mark.host_only("the inspector port is not published from the container")
def test_debug_opens_the_node_inspector(start_proxy) -> None:
    """OpenWhisk's __OW_RUNTIME_DEBUG=true works too; the Node launcher runs with --inspect on
    ACTIONPROXY_DEBUG_PORT, which answers the DevTools /json/version on 127.0.0.1."""
    port = free_port()
    proxy = start_proxy("nodejs", env={"__OW_RUNTIME_DEBUG": "true", "ACTIONPROXY_DEBUG_PORT": str(port)})
    assert proxy.init("function main(args) { return {n: args.n + 1}; }\n")[0] == 200
    assert proxy.run({"n": 1}, activation_id="node-dbg") == (200, {"n": 2})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=10) as response:
        version = json.loads(response.read())
    assert version["Browser"].startswith("node.js/")
    _, err = proxy.streams()
    assert f"Debugger listening on ws://0.0.0.0:{port}/" in err
    assert re.search(r"actionproxy: debug: activation node-dbg ended: 200 in [\d.]+ ms", err), err


@pytest.mark.host_only("the gate is a file on the host")
def test_livez_stays_200_when_full(start_proxy, tmp_path) -> None:
    """/livez (the liveness probe) is 200 while /healthz says "full": busy is not broken."""
    import threading
    import urllib.request

    proxy = start_proxy(env={"ACTIONPROXY_MAX_CONCURRENT": "1"})
    gate = tmp_path / "gate"
    code = ("import asyncio, os\nasync def main(a):\n"
            "    while not os.path.exists(a['gate']):\n        await asyncio.sleep(0.01)\n    return {}\n")
    assert proxy.init(code)[0] == 200
    worker = threading.Thread(target=proxy.run, args=({"gate": str(gate)},))
    worker.start()
    try:
        for _ in range(500):
            try:
                urllib.request.urlopen(proxy.base + "/healthz", timeout=5)
            except urllib.error.HTTPError as err:
                assert err.code == 503
                break
        with urllib.request.urlopen(proxy.base + "/livez", timeout=5) as response:
            assert response.status == 200
    finally:
        gate.touch()
        worker.join(30)
