"""Fault rules: bad requests, dying actions, deadlines, the in-flight cap and failed inits.

Every test drives a real proxy over real HTTP, checks the error it answers with, and then
proves the container still serves by running a good activation. Nothing is timed: waits are
polls with a generous cap, so a hang fails as a timeout rather than a flaky duration check.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import Proxy, process_gone, wait_until

TARGETS = ("host", "container")  # every test runs against a host proxy and the runtime image

NOT_INITIALIZED = "no action defined yet"
NOT_A_DICT = "The action did not return a dictionary or array."
BAD_ARGUMENT = "The action did not receive a dictionary or array as an argument."
COMPILE_FAILED = "The action failed to generate or locate a binary. See logs for details."
START_FAILED = "Cannot start action. Check logs for details."
EXITED_DURING_INIT = "Command exited abruptly during initialization."
COMMAND_EXITED = "command exited"

# The end of both actions: results of every shape the proxy must judge.
RESULT_SHAPES = """
    if how == "set":
        return {1, 2}
    if how == "string":
        return "not a json object"
    if how == "none":
        return None
    if how == "nan":
        return {"x": float("nan")}
    return {"ok": args.get("n"), "pid": os.getpid()}
"""

# One action per mode; `args["how"]` picks the fault. "hold" marks its arrival in a folder
# and waits for a "release" file there (30 s cap), so tests can keep activations in flight.
SYNC_ACTION = """
import os, signal, sys, time
from pathlib import Path

def main(args):
    how = args.get("how")
    if "pidfile" in args:
        Path(args["pidfile"]).write_text(str(os.getpid()))
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "_exit":
        os._exit(3)
    if how == "sys.exit":
        sys.exit(1)
    if how == "sleep":
        time.sleep(30)
        return {"error": "was not stopped at its deadline"}
    if how == "nap":
        time.sleep(args["seconds"])
    if how == "hold":
        folder = Path(args["dir"])
        (folder / f"arrived-{args['n']}").touch()
        cap = time.monotonic() + 30
        while not (folder / "release").exists():
            if time.monotonic() > cap:
                return {"error": "never released"}
            time.sleep(0.01)
""" + RESULT_SHAPES

ASYNC_ACTION = """
import asyncio, os, sys, time
from pathlib import Path

waiting = 0

async def main(args):
    global waiting
    how = args.get("how")
    if "pidfile" in args:
        Path(args["pidfile"]).write_text(str(os.getpid()))
    if how == "wait":
        waiting += 1
        await asyncio.sleep(30)
        return {"error": "was not interrupted"}
    if how == "_exit":
        cap = time.monotonic() + 30
        while waiting < args["expect"]:
            if time.monotonic() > cap:
                return {"error": f"only {waiting} of {args['expect']} arrived"}
            await asyncio.sleep(0.01)
        os._exit(3)
    if how == "sys.exit":
        sys.exit(1)
    if how == "sleep":
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            Path(args["marker"]).write_text("cancelled")
            raise
        return {"error": "was not cancelled at its deadline"}
    if how == "block":
        time.sleep(30)
        return {"error": "was not killed at its deadline"}
    if how == "nap":
        await asyncio.sleep(args["seconds"])
    if how == "hold":
        folder = Path(args["dir"])
        (folder / f"arrived-{args['n']}").touch()
        cap = time.monotonic() + 30
        while not (folder / "release").exists():
            if time.monotonic() > cap:
                return {"error": "never released"}
            await asyncio.sleep(0.01)
""" + RESULT_SHAPES

ACTIONS = {"sync": SYNC_ACTION, "async": ASYNC_ACTION}


# ---------------------------------------------------------------- helpers





def deadline_in(ms: int) -> str:
    """An OpenWhisk deadline: epoch milliseconds, as a string, `ms` from now."""
    return str(int(time.time() * 1000) + ms)


def started(proxy: Proxy, mode: str) -> Proxy:
    status, body = proxy.init(ACTIONS[mode])
    assert (status, body) == (200, {"ok": True})
    return proxy


def assert_serves(proxy: Proxy, n: int = 7) -> int:
    """A good activation works; returns the pid that ran it."""
    status, body = proxy.run({"n": n})
    assert status == 200, body
    assert body["ok"] == n
    return body["pid"]


def assert_command_exited(status: int, body: Any) -> None:
    assert status == 400, body
    assert isinstance(body, dict) and COMMAND_EXITED in body["error"], body


def submit(pool: ThreadPoolExecutor, proxy: Proxy, value: dict, **other: Any) -> Future:
    return pool.submit(proxy.run, value, **other)


def wait_for_arrivals(folder: Path, count: int) -> None:
    wait_until(lambda: len(list(folder.glob("arrived-*"))) >= count, f"{count} activations arriving")


def raw_request(proxy: Proxy, method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(proxy.base + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    return status, json.loads(raw)


# ---------------------------------------------------------------- malformed requests

@pytest.mark.parametrize("body", [b"{not json", b"XXX", b"[1, 2]", b'"value"'])
def test_malformed_init_body_is_a_json_4xx_and_init_still_works(proxy: Proxy, body: bytes) -> None:
    """A /init body that is not a JSON object answers 4xx {"error": ...}; a good /init then works."""
    status, parsed, _ = proxy.post("/init", body)
    assert 400 <= status < 500, parsed
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str), parsed
    started(proxy, "sync")
    assert_serves(proxy)


@pytest.mark.parametrize("body", [b"{not json", b"XXX", b"", b"[1, 2]"])
def test_malformed_run_body_is_a_json_4xx_and_run_still_works(proxy: Proxy, body: bytes) -> None:
    """A /run body that is not a JSON object answers 4xx {"error": ...}; a good /run then works."""
    started(proxy, "async")
    status, parsed, _ = proxy.post("/run", body)
    assert 400 <= status < 500, parsed
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str), parsed
    assert_serves(proxy)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("value", ["A", 3, True])
def test_value_not_object_or_array_is_404_bad_argument(proxy: Proxy, mode: str, value: Any) -> None:
    """A `value` that is neither an object nor an array answers 404 with the exact BAD_ARGUMENT string."""
    started(proxy, mode)
    assert proxy.run(value) == (404, {"error": BAD_ARGUMENT})
    assert_serves(proxy)


def test_run_before_init_is_500_no_action_defined_yet(proxy: Proxy) -> None:
    """/run before any /init answers 500 {"error":"no action defined yet"}."""
    status, parsed, _ = proxy.post("/run", {"value": {"x": 1}})
    assert (status, parsed) == (500, {"error": NOT_INITIALIZED})


@pytest.mark.parametrize("method,path", [("POST", "/nope"), ("GET", "/"), ("GET", "/run"), ("PUT", "/init")])
def test_unknown_route_is_404_json(proxy: Proxy, method: str, path: str) -> None:
    """Any other path or method answers 404 with a JSON {"error": ...} body."""
    status, parsed = raw_request(proxy, method, path)
    assert status == 404
    assert isinstance(parsed, dict) and isinstance(parsed.get("error"), str), parsed


# ---------------------------------------------------------------- dying actions

@pytest.mark.parametrize("how", ["kill", "_exit"])
def test_sync_worker_dying_fails_only_its_activation(start_proxy, tmp_path: Path, how: str) -> None:
    """A sync worker that dies mid-activation fails only that activation (400 "command exited"); others finish and the next /run works."""
    proxy = started(start_proxy(), "sync")
    folder = tmp_path / "hold"
    folder.mkdir()
    with ThreadPoolExecutor(2) as pool:
        held = submit(pool, proxy, {"how": "hold", "dir": str(folder), "n": 1})
        wait_for_arrivals(folder, 1)
        assert_command_exited(*proxy.run({"how": how}))
        (folder / "release").touch()
        status, body = held.result()
    assert status == 200 and body["ok"] == 1, body
    assert_serves(proxy)
    proxy.check_streams(sentinels=3)


def test_async_launcher_dying_fails_its_inflight_activations_and_restarts(start_proxy) -> None:
    """os._exit in an async main fails every in-flight activation with "command exited"; the launcher restarts and the next /run works."""
    proxy = started(start_proxy(), "async")
    first_pid = assert_serves(proxy)
    waiters = 5
    with ThreadPoolExecutor(waiters + 1) as pool:
        others = [submit(pool, proxy, {"how": "wait"}) for _ in range(waiters)]
        dying = submit(pool, proxy, {"how": "_exit", "expect": waiters})
        for future in [dying, *others]:
            assert_command_exited(*future.result())
    assert assert_serves(proxy) != first_pid, "a new launcher serves after the crash"
    proxy.check_streams(sentinels=waiters + 3)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_sys_exit_in_main_is_400_command_exited(start_proxy, mode: str) -> None:
    """sys.exit(1) inside main answers 400 with "command exited"; the container keeps serving."""
    proxy = started(start_proxy(), mode)
    assert_command_exited(*proxy.run({"how": "sys.exit"}))
    assert_serves(proxy)
    proxy.check_streams(sentinels=2)


# ---------------------------------------------------------------- bad results

@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("how", ["set", "string", "none", "nan"])
def test_result_not_a_json_object_is_502_not_a_dict(start_proxy, mode: str, how: str) -> None:
    """A result that is unserializable or not an object/array answers 502 with the exact NOT_A_DICT string."""
    proxy = started(start_proxy(), mode)
    assert proxy.run({"how": how}) == (502, {"error": NOT_A_DICT})
    assert_serves(proxy)
    proxy.check_streams(sentinels=2)


# ---------------------------------------------------------------- deadlines

@pytest.mark.host_only("polls the host's /proc for a pid the action reports from inside its pid namespace")
def test_deadline_kills_a_sleeping_sync_worker(start_proxy, tmp_path: Path) -> None:
    """A sync activation past its deadline answers 502, its worker process is killed, and the next /run works."""
    proxy = started(start_proxy(), "sync")
    pidfile = tmp_path / "worker.pid"
    status, body = proxy.run({"how": "sleep", "pidfile": str(pidfile)}, deadline=deadline_in(500))
    assert status == 502, body
    assert "deadline" in body["error"] and "killed" in body["error"], body
    pid = int(pidfile.read_text())
    wait_until(lambda: process_gone(pid), f"worker {pid} being killed")
    assert assert_serves(proxy) != pid
    proxy.check_streams(sentinels=2)


def test_deadline_cancels_an_awaiting_async_activation(start_proxy, tmp_path: Path) -> None:
    """An async activation past its deadline answers 502 and its task is cancelled; the launcher lives on."""
    proxy = started(start_proxy(), "async")
    pid = assert_serves(proxy)
    marker = tmp_path / "cancelled"
    status, body = proxy.run({"how": "sleep", "marker": str(marker)}, deadline=deadline_in(500))
    assert status == 502, body
    assert "deadline" in body["error"] and "cancelled" in body["error"], body
    wait_until(marker.exists, "the task seeing CancelledError")
    assert assert_serves(proxy) == pid, "cancelling a task does not restart the launcher"
    proxy.check_streams(sentinels=3)


@pytest.mark.host_only("polls the host's /proc for a pid the action reports from inside its pid namespace")
def test_deadline_kills_an_async_launcher_blocking_its_loop(start_proxy) -> None:
    """An async activation that blocks the loop past deadline + cancel grace gets the launcher killed and restarted; the next /run works."""
    proxy = started(start_proxy(env={"ACTIONPROXY_CANCEL_GRACE_MS": "300"}), "async")
    pid = assert_serves(proxy)
    status, body = proxy.run({"how": "block"}, deadline=deadline_in(500))
    assert status == 502, body
    assert "deadline" in body["error"], body
    wait_until(lambda: process_gone(pid), f"launcher {pid} being killed")
    assert assert_serves(proxy) != pid, "a new launcher serves after the kill"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_deadline_before_proxy_start_is_not_enforced(start_proxy, mode: str) -> None:
    """A deadline earlier than the proxy's start (OpenWhisk's suite sends "123") is not enforced."""
    proxy = started(start_proxy(), mode)
    status, body = proxy.run({"how": "nap", "seconds": 0.3, "n": 1}, deadline="123")
    assert status == 200 and body["ok"] == 1, body


@pytest.mark.parametrize("deadline", ["soon", "12:00", {"at": 1}, [1], "nan"])
def test_bad_deadline_is_400(start_proxy, deadline: Any) -> None:
    """A deadline that is not epoch milliseconds answers 400 with a JSON error; the container keeps serving."""
    proxy = started(start_proxy(), "async")
    status, body = proxy.run({"n": 1}, deadline=deadline)
    assert status == 400, body
    assert "deadline" in body["error"], body
    assert_serves(proxy)


# ---------------------------------------------------------------- in-flight cap

@pytest.mark.parametrize("mode", ["sync", "async"])
def test_inflight_cap_answers_429_naming_the_limit(start_proxy, tmp_path: Path, mode: str) -> None:
    """With ACTIONPROXY_MAX_CONCURRENT=2 and two activations in flight, a third gets 429 naming the limit."""
    proxy = started(start_proxy(env={"ACTIONPROXY_MAX_CONCURRENT": "2"}), mode)
    folder = tmp_path / "hold"
    folder.mkdir()
    with ThreadPoolExecutor(2) as pool:
        held = [submit(pool, proxy, {"how": "hold", "dir": str(folder), "n": n}) for n in (1, 2)]
        wait_for_arrivals(folder, 2)
        status, body = proxy.run({"n": 3})
        (folder / "release").touch()
        results = [future.result() for future in held]
    assert status == 429, body
    assert isinstance(body, dict) and "2" in body["error"], body
    assert [(s, b["ok"]) for s, b in results] == [(200, 1), (200, 2)], results
    assert_serves(proxy)


# ---------------------------------------------------------------- failed inits

INIT_FAILURES = {
    "syntax error": ('10 PRINT "Hello!"\n', COMPILE_FAILED, "SyntaxError"),
    "missing module": ("import iamnotsupported\ndef main(args):\n    return args\n", START_FAILED, "Traceback"),
    "module-level exit": ("import sys\nsys.exit(1)\ndef main(args):\n    return args\n", START_FAILED,
                          EXITED_DURING_INIT),
}


@pytest.mark.parametrize("case", INIT_FAILURES, ids=list(INIT_FAILURES))
def test_failed_init_is_502_logged_and_a_new_init_works(start_proxy, case: str) -> None:
    """A failing /init answers 502 with the reference string and logs why; a later /init is allowed and works."""
    code, message, logged = INIT_FAILURES[case]
    proxy = start_proxy()
    assert proxy.init(code) == (502, {"error": message})
    out, err = proxy.check_streams(sentinels=1)
    assert out == "", out
    assert logged in err, err
    started(proxy, "sync")
    assert_serves(proxy)
