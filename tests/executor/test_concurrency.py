"""Concurrency rules, proven by data, never by timing.

Concurrency is shown by barriers inside the actions (every activation waits until all have
arrived, with a 30 s cap that returns an error instead), attribution by ids that each request
carries and each activation reports back or logs. Up to ~50 concurrent requests go through
threads and the harness; hundreds go through one aiohttp session on an asyncio loop.
"""

from __future__ import annotations

import json
import resource
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import BASH_WAIT_FOR, SENTINEL, Proxy, run_async

MiB = 1024 * 1024
CONTEXT_KEYS = {  # request field -> the variable the action must see
    "activation_id": "__OW_ACTIVATION_ID",
    "deadline": "__OW_DEADLINE",
    "transaction_id": "__OW_TRANSACTION_ID",
    "api_key": "__OW_API_KEY",
    "namespace": "__OW_NAMESPACE",
    "action_name": "__OW_ACTION_NAME",
}

ASYNC_BARRIER = """
import asyncio

arrived = 0
everyone = asyncio.Event()

async def main(args):
    global arrived
    arrived += 1
    if arrived >= args["n"]:
        everyone.set()
    try:
        await asyncio.wait_for(everyone.wait(), 30)
    except asyncio.TimeoutError:
        return {"error": f"only {arrived} of {args['n']} arrived"}
    return {"echo": args["i"]}
"""

SYNC_BARRIER = """
import os, time

def main(args):
    folder = args["dir"]
    open(os.path.join(folder, str(args["i"])), "w").close()
    cap = time.monotonic() + 30
    while len(os.listdir(folder)) < args["n"]:
        if time.monotonic() > cap:
            return {"error": f"only {len(os.listdir(folder))} of {args['n']} ran at once"}
        time.sleep(0.01)
    return {"echo": args["i"], "pid": os.getpid()}
"""

CONTEXT_ASYNC = """
import asyncio, os, random

KEYS = %r

async def main(args):
    before = {k: os.environ.get(k) for k in KEYS}
    await asyncio.sleep(random.random() * 0.05)
    after = {k: os.getenv(k) for k in KEYS}
    return {"i": args.get("i"), "before": before, "after": after}
""" % (sorted(CONTEXT_KEYS.values()),)

CONTEXT_SYNC = """
import os, random, time

KEYS = %r

def main(args):
    before = {k: os.environ.get(k) for k in KEYS}
    time.sleep(random.random() * 0.05)
    after = {k: os.getenv(k) for k in KEYS}
    return {"i": args.get("i"), "before": before, "after": after}
""" % (sorted(CONTEXT_KEYS.values()),)

LOGS_ASYNC = """
import asyncio, random, sys

async def main(args):
    me = args["id"]
    print("begin", me)
    print("err-begin", me, file=sys.stderr)
    await asyncio.sleep(random.random() * 0.1)
    print("end", me)
    print("err-end", me, file=sys.stderr)
    return {"id": me}
"""

LOGS_SYNC = LOGS_ASYNC.replace("async def", "def").replace("await asyncio.sleep", "time.sleep").replace(
    "import asyncio", "import time")

LARGE = """
import sys

def main(args):
    if "log" in args:
        print("L" * args["log"])
        print("E" * args["log"], file=sys.stderr)
        return {"logged": args["log"]}
    if "size" in args:
        return {"data": "r" * args["size"]}
    return args
"""

BASH_POOL = "#!/bin/bash" + BASH_WAIT_FOR + r"""
# v1 action loop: one request per line on stdin, one JSON result line on fd 3.
while read -r line; do
  [[ $line =~ \"id\":\ *\"([A-Za-z0-9_-]+)\" ]] && id=${BASH_REMATCH[1]}
  [[ $line =~ \"dir\":\ *\"([^\"]+)\" ]] && dir=${BASH_REMATCH[1]}
  [[ $line =~ \"n\":\ *([0-9]+) ]] && n=${BASH_REMATCH[1]}
  echo "out $id"
  echo "err $id" >&2
  touch "$dir/$id"
  wait_for "$dir" '*' "$n"
  echo "done $id"
  echo "{\"id\":\"$id\",\"seen\":$seen,\"pid\":$$}" >&3
done
"""


# ---------------------------------------------------------------- helpers

def empty_dir(tmp_path: Path) -> str:
    """A fresh folder for a filesystem barrier (tmp_path itself holds the proxy's logs)."""
    folder = tmp_path / f"barrier-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return str(folder)


def started(proxy: Proxy, code: str) -> Proxy:
    assert proxy.init(code) == (200, {"ok": True})
    return proxy


def run_threaded(proxy: Proxy, payloads: list[dict], timeout: float = 60) -> list[tuple[int, Any]]:
    """POST every payload to /run at once from its own thread; results in payload order."""
    with ThreadPoolExecutor(len(payloads)) as pool:
        futures = [pool.submit(proxy.post, "/run", p, timeout) for p in payloads]
        return [(status, parsed) for status, parsed, _ in (f.result() for f in futures)]



def allow_open_files(count: int) -> None:
    """Raise this process's soft fd limit (the proxy inherits it) for `count` sockets each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def context_request(i: int, now_ms: int) -> dict:
    """A /run payload with a unique value for every context field."""
    return {"value": {"i": i}, "activation_id": uuid.uuid4().hex, "deadline": str(now_ms + 120_000 + i),
            "transaction_id": f"tid-{i}", "api_key": f"key-{i}:{uuid.uuid4().hex}",
            "namespace": f"ns-{i}", "action_name": f"/ns-{i}/action"}


def context_mismatches(payloads: list[dict], results: list[tuple[int, Any]]) -> list[str]:
    problems = []
    for payload, (status, body) in zip(payloads, results):
        expected = {var: payload[field] for field, var in CONTEXT_KEYS.items()}
        if status != 200 or body.get("i") != payload["value"]["i"]:
            problems.append(f"{payload['value']['i']}: {status} {body}")
        elif body["before"] != expected or body["after"] != expected:
            problems.append(f"{payload['value']['i']}: saw {body}, sent {expected}")
    return problems


def blocks(stream: str) -> list[str]:
    """The text of each activation between consecutive sentinels; nothing may follow the last one."""
    parts = stream.split(SENTINEL + "\n")
    assert parts[-1] == "", f"output after the last sentinel: {parts[-1][:200]!r}"
    return parts[:-1]


# ---------------------------------------------------------------- concurrency

def test_async_activations_run_concurrently(proxy: Proxy) -> None:
    """200 activations of an async main are all in flight at once (each waits for all 200) and each gets its own input."""
    n = 200
    started(proxy, ASYNC_BARRIER)
    results = run_async(proxy, [{"value": {"i": i, "n": n}} for i in range(n)])
    assert results == [(200, {"echo": i}) for i in range(n)]


def test_sync_activations_run_concurrently(proxy: Proxy, tmp_path: Path) -> None:
    """8 activations of a plain def main run at the same time in 8 worker processes (filesystem barrier)."""
    n = 8
    started(proxy, SYNC_BARRIER)
    folder = empty_dir(tmp_path)
    results = run_threaded(proxy, [{"value": {"i": i, "n": n, "dir": folder}} for i in range(n)])
    assert [(s, b.get("echo")) for s, b in results] == [(200, i) for i in range(n)], results
    assert len({b["pid"] for _, b in results}) == n, "one worker process per concurrent activation"


# ---------------------------------------------------------------- per-activation context

def test_async_context_env_is_per_activation(proxy: Proxy) -> None:
    """1000 concurrent async activations each see their own __OW_* values in os.environ, before and after awaiting."""
    n = 1000
    allow_open_files(2 * n)
    started(proxy, CONTEXT_ASYNC)
    now_ms = int(time.time() * 1000)
    payloads = [context_request(i, now_ms) for i in range(n)]
    assert context_mismatches(payloads, run_async(proxy, payloads)) == []


def test_sync_context_env_is_per_activation(proxy: Proxy) -> None:
    """32 concurrent sync activations each see their own __OW_* values in os.environ."""
    n = 32
    started(proxy, CONTEXT_SYNC)
    now_ms = int(time.time() * 1000)
    payloads = [context_request(i, now_ms) for i in range(n)]
    assert context_mismatches(payloads, run_threaded(proxy, payloads)) == []
    payloads = [context_request(i, now_ms) for i in range(n, 2 * n)]  # the same workers, reused
    assert context_mismatches(payloads, run_threaded(proxy, payloads)) == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_context_of_an_earlier_activation_does_not_leak(start_proxy, mode: str) -> None:
    """A context field the previous activation sent (api_key) is absent for one that did not send it, in the same process."""
    proxy = started(start_proxy(env={"ACTIONPROXY_MAX_WORKERS": "1"}),
                    CONTEXT_SYNC if mode == "sync" else CONTEXT_ASYNC)
    status, body = proxy.run({"i": 1}, api_key="secret-of-the-first-caller", activation_id="first")
    assert status == 200 and body["after"]["__OW_API_KEY"] == "secret-of-the-first-caller", body
    status, body = proxy.run({"i": 2}, activation_id="second")
    assert status == 200, body
    assert body["after"]["__OW_ACTIVATION_ID"] == "second"
    assert body["after"]["__OW_API_KEY"] is None, body


# ---------------------------------------------------------------- logs

@pytest.mark.parametrize("mode,n", [("async", 100), ("sync", 16)])
def test_concurrent_logs_do_not_interleave(proxy: Proxy, mode: str, n: int) -> None:
    """Concurrent activations' stdout and stderr come out as one block per activation, each ended by its sentinel."""
    started(proxy, LOGS_ASYNC if mode == "async" else LOGS_SYNC)
    ids = [f"act{i:03d}" for i in range(n)]
    results = run_async(proxy, [{"value": {"id": i}, "activation_id": i} for i in ids])
    assert results == [(200, {"id": i}) for i in ids]
    out, err = proxy.streams()
    assert out.count(SENTINEL) == n and err.count(SENTINEL) == n
    for stream, prefix in ((out, ""), (err, "err-")):
        seen = []
        for block in blocks(stream):
            me = block.split()[-1] if block.strip() else "<empty>"
            assert block == f"{prefix}begin {me}\n{prefix}end {me}\n", f"mixed block: {block!r}"
            seen.append(me)
        assert sorted(seen) == ids


def test_json_log_lines_carry_their_activation_id(start_proxy) -> None:
    """With ACTIONPROXY_LOG_FORMAT=json every stdout line is a JSON object naming the activation that wrote it; no sentinels."""
    n = 20
    proxy = started(start_proxy(env={"ACTIONPROXY_LOG_FORMAT": "json"}), LOGS_ASYNC)
    ids = [f"act{i:03d}" for i in range(n)]
    results = run_threaded(proxy, [{"value": {"id": i}, "activation_id": i} for i in ids])
    assert results == [(200, {"id": i}) for i in ids]
    out, err = proxy.streams()
    assert SENTINEL not in out and SENTINEL not in err
    lines = [json.loads(line) for line in out.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    by_id: dict[str, list[tuple[str, str]]] = {}
    for line in lines:
        assert line["message"].split()[-1] == line["activationId"], line
        by_id.setdefault(line["activationId"], []).append((line["stream"], line["message"]))
    assert sorted(by_id) == ids
    for me, entries in by_id.items():
        assert sorted(entries) == sorted([("stdout", f"begin {me}"), ("stdout", f"end {me}"),
                                          ("stderr", f"err-begin {me}"), ("stderr", f"err-end {me}")])


# ---------------------------------------------------------------- sizes

@pytest.mark.parametrize("mode", ["sync", "async"])
def test_large_results_logs_and_inputs_come_through_intact(proxy: Proxy, mode: str) -> None:
    """A 1 MiB result, a single 1 MiB log line on each stream and OpenWhisk's large input all pass intact (no 64 KiB cliff)."""
    started(proxy, LARGE if mode == "sync" else LARGE.replace("def main", "async def main"))
    assert proxy.run({"size": MiB}) == (200, {"data": "r" * MiB})
    assert proxy.run({"log": MiB}) == (200, {"logged": MiB})
    large = {"arg": "a" * 1048561}
    assert proxy.run(large) == (200, large)
    out, err = proxy.check_streams(sentinels=3)
    assert out.split("\n") == ["L" * MiB]
    assert err.split("\n") == ["E" * MiB]


# ---------------------------------------------------------------- action-loop executables

def test_bash_action_loop_pool_runs_concurrently_with_attributed_logs(proxy: Proxy, tmp_path: Path) -> None:
    """A v1 bash action loop serves 8 concurrent activations from a pool of processes, each one's stdout/stderr in its own block."""
    n = 8
    started(proxy, BASH_POOL)
    ids = [f"bash{i}" for i in range(n)]
    folder = empty_dir(tmp_path)
    results = run_threaded(proxy, [{"value": {"id": i, "dir": folder, "n": n}} for i in ids])
    assert [(s, b["id"], b["seen"]) for s, b in results] == [(200, i, n) for i in ids], results
    assert len({b["pid"] for _, b in results}) == n, "one process per concurrent activation"
    out, err = proxy.streams()
    out_blocks, err_blocks = blocks(out), blocks(err)
    assert len(out_blocks) == n and len(err_blocks) == n, (out, err)
    assert sorted(out_blocks) == sorted(f"out {i}\ndone {i}\n" for i in ids)
    assert sorted(err_blocks) == sorted(f"err {i}\n" for i in ids)
