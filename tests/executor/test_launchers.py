"""ACTIONPROXY_LAUNCHERS: several async launchers, so that one crash fails only a share of the work.

An async action (Python `async def main`, any Node.js code) runs every activation in one
launcher process, so a kill -9 or segfault there fails all of them. With N launchers the
proxy sends each activation to the one with the fewest in flight, and a dead one fails only
its own activations and is replaced. Every test holds activations in flight with files in
`tmp_path` (an arrival file each, one release file for all), so nothing here is timed.
"""

from __future__ import annotations

import collections
import signal
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import Proxy, free_port, process_gone, wait_until

COMMAND_EXITED = "command exited"
EXHAUSTED = "The action exhausted its memory and was aborted."

PYTHON = """
import asyncio, os, signal, time
from pathlib import Path

async def main(args):
    how = args.get("how")
    if how == "hog":  # touch every page, so the memory really is resident
        hog = bytearray(b"x") * (args["mib"] << 20)
    if how in ("hold", "hog"):
        folder = Path(args["dir"])
        (folder / f"arrived-{args['n']}").touch()
        cap = time.monotonic() + 30
        while not (folder / "release").exists():
            if time.monotonic() > cap:
                return {"error": "never released"}
            await asyncio.sleep(0.01)
    if how == "kill":
        Path(args["pidfile"]).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return {"pid": os.getpid(), "n": args.get("n")}
"""

NODE = """
const fs = require("fs");
const path = require("path");

async function main(args) {
    if (args.how === "hold") {
        fs.writeFileSync(path.join(args.dir, "arrived-" + args.n), "");
        const cap = Date.now() + 30000;
        while (!fs.existsSync(path.join(args.dir, "release"))) {
            if (Date.now() > cap) return { error: "never released" };
            await new Promise((resolve) => setTimeout(resolve, 10));
        }
    }
    if (args.how === "kill") {
        fs.writeFileSync(args.pidfile, String(process.pid));
        process.kill(process.pid, "SIGKILL");
    }
    return { pid: process.pid, n: args.n };
}
"""

SYNC_PYTHON = "import os\ndef main(args):\n    return {'pid': os.getpid()}\n"
ACTIONS = {"python": PYTHON, "nodejs": NODE}


# ---------------------------------------------------------------- helpers

def started(start_proxy, runtime: str, launchers: int | None, **env: str) -> Proxy:
    if launchers is not None:
        env["ACTIONPROXY_LAUNCHERS"] = str(launchers)
    proxy = start_proxy(runtime, env=env)
    assert proxy.init(ACTIONS[runtime]) == (200, {"ok": True})
    return proxy


class Held:
    """Activations kept in flight until `release()`; each reports the pid that ran it."""

    def __init__(self, proxy: Proxy, folder: Path, pool: ThreadPoolExecutor) -> None:
        self.proxy = proxy
        self.folder = folder
        folder.mkdir()
        self.pool = pool
        self.futures: list[Future] = []

    def add(self, count: int) -> None:
        """Start `count` more and wait until every one runs in its launcher."""
        first = len(self.futures)
        self.futures += [self.pool.submit(self.proxy.run, {"how": "hold", "dir": str(self.folder), "n": n})
                         for n in range(first, first + count)]
        wait_until(lambda: len(list(self.folder.glob("arrived-*"))) == len(self.futures),
                   f"{len(self.futures)} activations in flight")

    def release(self) -> list[tuple[int, Any]]:
        (self.folder / "release").touch()
        return [future.result(timeout=60) for future in self.futures]


def pids_of(results: list[tuple[int, Any]]) -> collections.Counter:
    """How many activations each launcher pid ran; every one must have succeeded."""
    assert all(status == 200 for status, _ in results), results
    return collections.Counter(body["pid"] for _, body in results)


def spread(proxy: Proxy, folder: Path, count: int) -> collections.Counter:
    with ThreadPoolExecutor(count) as pool:
        held = Held(proxy, folder, pool)
        held.add(count)
        return pids_of(held.release())


def launcher_pids(proxy: Proxy) -> set[int]:
    """The proxy's child processes: its launchers (forked sync workers are the zygote's)."""
    return {child.pid for child in psutil.Process(proxy.process.pid).children()
            if child.status() != psutil.STATUS_ZOMBIE}


def restarts(proxy: Proxy) -> int:
    with urllib.request.urlopen(proxy.base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    line = next(line for line in text.splitlines() if line.startswith("actionproxy_launcher_restarts_total "))
    return int(float(line.split()[1]))


def assert_command_exited(status: int, body: Any) -> None:
    assert status == 400, body
    assert isinstance(body, dict) and COMMAND_EXITED in body["error"], body


# ---------------------------------------------------------------- spreading

@pytest.mark.parametrize("runtime", ["python", "nodejs"])
def test_activations_spread_over_every_launcher(start_proxy, tmp_path: Path, runtime: str) -> None:
    """With ACTIONPROXY_LAUNCHERS=4, 8 activations in flight run 2 in each of 4 launcher
    processes (fewest in flight first); the stem cell started before /init is one of them."""
    proxy = start_proxy(runtime, env={"ACTIONPROXY_LAUNCHERS": "4"})
    stem = launcher_pids(proxy)
    assert len(stem) == 1, "one stem cell before /init"
    assert proxy.init(ACTIONS[runtime]) == (200, {"ok": True})
    assert len(launcher_pids(proxy)) == 4
    counts = spread(proxy, tmp_path / "held", 8)
    assert sorted(counts.values()) == [2, 2, 2, 2], counts
    assert set(counts) == launcher_pids(proxy) and stem <= set(counts), (counts, stem)


def test_sync_mode_runs_one_zygote_whatever_the_setting(start_proxy) -> None:
    """`def main` forks its workers from one zygote: ACTIONPROXY_LAUNCHERS does not apply."""
    proxy = start_proxy("python", env={"ACTIONPROXY_LAUNCHERS": "4"})
    assert proxy.init(SYNC_PYTHON) == (200, {"ok": True})
    status, body = proxy.run({})
    assert status == 200, body
    assert len(launcher_pids(proxy)) == 1, "the zygote alone; its workers are its own children"


def test_debug_mode_runs_one_launcher_for_the_debugger(start_proxy, tmp_path: Path) -> None:
    """Under ACTIONPROXY_DEBUG the launcher listens for a debugger on one port: one launcher."""
    proxy = started(start_proxy, "nodejs", 4, ACTIONPROXY_DEBUG="1", ACTIONPROXY_DEBUG_PORT=str(free_port()))
    assert len(launcher_pids(proxy)) == 1
    assert len(spread(proxy, tmp_path / "held", 4)) == 1


# ---------------------------------------------------------------- shared fate, bounded

@pytest.mark.parametrize("runtime", ["python", "nodejs"])
def test_a_killed_launcher_fails_only_its_own_activations(start_proxy, tmp_path: Path, runtime: str) -> None:
    """16 activations in flight over 4 launchers, then one activation SIGKILLs its launcher:
    the 4 held there and the killer answer 400 "command exited", the 12 others succeed, and
    the launcher is replaced, so the next activations run on 4 launchers again."""
    proxy = started(start_proxy, runtime, 4)
    pidfile = tmp_path / "killed.pid"
    with ThreadPoolExecutor(17) as pool:
        held = Held(proxy, tmp_path / "held", pool)
        held.add(16)
        assert_command_exited(*proxy.run({"how": "kill", "pidfile": str(pidfile)}))
        results = held.release()
    killed = int(pidfile.read_text())
    failed = [result for result in results if result[0] != 200]
    assert len(failed) == 4, results
    for result in failed:
        assert_command_exited(*result)
    survivors = pids_of([result for result in results if result[0] == 200])
    assert sorted(survivors.values()) == [4, 4, 4] and killed not in survivors, survivors
    wait_until(lambda: restarts(proxy) == 1, "the killed launcher being replaced")
    assert process_gone(killed)
    again = spread(proxy, tmp_path / "again", 8)
    assert len(again) == 4 and killed not in again, again


@pytest.mark.parametrize("runtime", ["python", "nodejs"])
def test_one_launcher_shares_its_fate(start_proxy, tmp_path: Path, runtime: str) -> None:
    """The default, one async launcher: a SIGKILL in one activation fails every activation in
    flight (the fate the setting bounds); the launcher is replaced and the next /run works."""
    proxy = started(start_proxy, runtime, None)
    with ThreadPoolExecutor(5) as pool:
        held = Held(proxy, tmp_path / "held", pool)
        held.add(4)
        assert_command_exited(*proxy.run({"how": "kill", "pidfile": str(tmp_path / "killed.pid")}))
        for result in held.release():
            assert_command_exited(*result)
    status, body = proxy.run({"n": 1})
    assert status == 200 and body["pid"] != int((tmp_path / "killed.pid").read_text()), body


def test_memory_guard_watches_every_launcher(start_proxy, tmp_path: Path) -> None:
    """Over ACTIONPROXY_MEMORY_LIMIT the guard kills the launcher that holds the memory, here
    the fourth: its 2 activations answer OpenWhisk's out-of-memory error, the 6 others succeed."""
    proxy = started(start_proxy, "python", 4, ACTIONPROXY_MEMORY_LIMIT=str(400 << 20))
    with ThreadPoolExecutor(8) as pool:
        held = Held(proxy, tmp_path / "held", pool)
        held.add(7)  # 2, 2, 2, 1 in flight: the next one goes to the fourth launcher
        hog = pool.submit(proxy.run, {"how": "hog", "mib": 500, "dir": str(held.folder), "n": 7})
        assert hog.result(timeout=60) == (502, {"error": EXHAUSTED})
        results = held.release()
    failed = [result for result in results if result[0] != 200]
    assert failed == [(502, {"error": EXHAUSTED})], results
    assert sorted(pids_of([result for result in results if result[0] == 200]).values()) == [2, 2, 2]


# ---------------------------------------------------------------- drain

def test_sigterm_drains_every_launcher(start_proxy, tmp_path: Path) -> None:
    """Activations in flight on 4 launchers at SIGTERM all finish; the proxy exits 0 and
    stops every launcher."""
    proxy = started(start_proxy, "python", 4)
    launchers = launcher_pids(proxy)
    assert len(launchers) == 4
    with ThreadPoolExecutor(8) as pool:
        held = Held(proxy, tmp_path / "held", pool)
        held.add(8)
        proxy.process.send_signal(signal.SIGTERM)
        wait_until(lambda: proxy.post("/run", {"value": {}})[0] == 503, "draining")
        counts = pids_of(held.release())
    assert set(counts) == launchers, counts
    assert proxy.process.wait(60) == 0
    for pid in launchers:
        wait_until(lambda: process_gone(pid), f"launcher {pid} stopped")
