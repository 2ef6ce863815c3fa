"""A `def main` worker that holds several activations: they run in turn, in the order sent.

The proxy queues RUNs on a forked worker when its runs are fast (executor/pace.py). These
tests drive one real worker (a real launcher, zygote and fork) through its channel, so what
is queued where is decided by the test, not by timing: the queue runs in order; a queued
activation given up (deadline) is skipped by the worker, answered as cancelled and never
runs; when the worker dies (killed at the running one's deadline, or the action crashing it)
only the running one fails and the queued ones come back NOT_STARTED, for the pool to run
elsewhere. A run is held open by a release file, so nothing here is timed. The last test
sends what production sends over HTTP: many fast activations with deadlines, with crashes
and slow runs past their deadline among them.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from pathlib import Path

import orjson
import pytest

from actionproxy.activation import Activation, ActivationResult
from actionproxy.errors import DEADLINE_PASSED
from actionproxy.archive import ActionSource
from actionproxy.config import Config
from actionproxy.executor import pace
from actionproxy.executor.channel import NOT_STARTED, ActionLoopChannel
from actionproxy.executor.languages import LauncherExecutor
from actionproxy.executor.options import LauncherOptions, Limits
from actionproxy.executor.stemcell import spawn_stem_cell

from conftest import run_async, wait_until

ACTION = """
import os, time
from pathlib import Path

def main(args):
    folder = Path(args["dir"])
    (folder / f"ran-{args['n']}").write_text(str(os.getpid()))
    if args.get("hold"):
        cap = time.monotonic() + 30
        while not (folder / "release").exists() and time.monotonic() < cap:
            time.sleep(0.005)
    if args.get("crash"):
        os._exit(3)
    return {"n": args["n"], "pid": os.getpid()}
"""


class Worker:
    """One forked worker of a real sync launcher, and the activations sent straight to it."""

    def __init__(self, executor: LauncherExecutor, folder: Path) -> None:
        self.executor = executor
        self.folder = folder
        self.channel: ActionLoopChannel = executor.watched()[0]
        self.sent: dict[int, Activation] = {}

    def send(self, n: int, **flags: bool) -> asyncio.Future[ActivationResult]:
        body = orjson.dumps({"value": {"dir": str(self.folder), "n": n, **flags}, "activation_id": uuid.uuid4().hex})
        self.sent[n] = Activation(body, f"a{n}", None)
        return self.channel.submit(self.sent[n])

    def ran(self, n: int) -> bool:
        return (self.folder / f"ran-{n}").exists()

    def release(self) -> None:
        (self.folder / "release").touch()


async def start_worker(tmp_path: Path) -> Worker:
    code = tmp_path / "action"
    code.mkdir()
    (code / "__main__.py").write_text(ACTION)
    config = Config.from_env("python", env={"ACTIONPROXY_ACTION_DIR": str(tmp_path / "work")})
    options = LauncherOptions(Limits(log_bytes=1 << 20, processes=4, cancel_grace=2.0), 1,
                              functools.partial(spawn_stem_cell, config))
    executor = LauncherExecutor(options, lambda is_err, data: None)
    await executor.init(ActionSource("launcher", code, "__main__.py", "main"), {})
    worker = Worker(executor, tmp_path)
    assert worker.channel.pace is not None and worker.channel.capacity == pace.MAX_DEPTH
    return worker


async def eventually(condition, what: str) -> None:
    cap = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < cap, f"never: {what}"
        await asyncio.sleep(0.01)


def results(*futures: asyncio.Future[ActivationResult]) -> list[dict]:
    return [orjson.loads(f.result().body) for f in futures]


def test_queued_activations_run_in_turn_and_their_times_set_the_pace(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = await start_worker(tmp_path)
        try:
            n = pace.SLOW_MEMORY + 40  # past a slow first run (a new process), if there was one
            futures = [worker.send(i) for i in range(n)]
            await asyncio.wait_for(asyncio.gather(*futures), 30)
            answers = results(*futures)
            assert [a["n"] for a in answers] == list(range(n))
            assert {a["pid"] for a in answers} == {worker.channel.pid}
            # the worker reported each run's time: these runs take far less than the budget
            assert worker.channel.pace.mean < pace.QUEUE_BUDGET and worker.channel.pace.depth > 1
        finally:
            worker.executor.close()

    asyncio.run(scenario())


def test_a_queued_activation_given_up_never_runs_and_the_worker_lives_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = await start_worker(tmp_path)
        try:
            head = worker.send(0, hold=True)
            given_up, behind = worker.send(1), worker.send(2)
            await eventually(lambda: worker.ran(0), "the first activation runs")
            assert worker.channel.abandon(worker.sent[1], grace=2.0) is False  # no kill: it was waiting
            worker.release()
            await asyncio.wait_for(asyncio.gather(head, behind), 30)
            assert [a["n"] for a in results(head, behind)] == [0, 2]
            await eventually(lambda: not worker.channel._cancelling, "the worker acknowledges the cancellation")
            assert not worker.ran(1) and not given_up.done()  # its answer is the pool's (the deadline error)
            assert worker.channel.alive
        finally:
            worker.executor.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("how", ["deadline", "crash"])
def test_when_the_worker_dies_only_the_running_one_fails(tmp_path: Path, how: str) -> None:
    """Killed at the running activation's deadline, or crashed by it: the ones queued behind it
    never started, so they come back NOT_STARTED (the pool sends them to another worker)."""
    async def scenario() -> None:
        worker = await start_worker(tmp_path)
        try:
            running = worker.send(0, hold=True, crash=how == "crash")
            queued = [worker.send(n) for n in (1, 2, 3)]
            await eventually(lambda: worker.ran(0), "the first activation runs")
            if how == "deadline":
                assert worker.channel.abandon(worker.sent[0], grace=2.0) is True
            else:
                worker.release()
            await asyncio.wait_for(asyncio.gather(running, *queued), 30)
            assert running.result().status == 400 and b"command exited" in running.result().body
            assert [f.result() for f in queued] == [NOT_STARTED] * 3
            assert not any(worker.ran(n) for n in (1, 2, 3))
        finally:
            worker.executor.close()

    asyncio.run(scenario())


MIXED = """
import os, time

def main(args):
    if args.get("crash"):
        os._exit(3)
    time.sleep(args.get("sleep", 0))
    return {"i": args["i"], "pid": os.getpid()}
"""


def test_fast_runs_with_crashes_and_deadlines_among_them_lose_nothing(start_proxy) -> None:
    """1,500 activations of a fast def main at once, each with a deadline; every 50th crashes its
    worker and every 75th sleeps past its 0.3 s deadline. Each crash and each killed run fails
    only itself: every other activation answers its own result, whichever worker queue it was
    in when its neighbour went down. The pace is warmed first so that workers do hold queues."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_WORKERS": "8"})
    assert proxy.init(MIXED) == (200, {"ok": True})
    for i in range(pace.SLOW_MEMORY + 40):
        assert proxy.run({"i": i})[0] == 200
    far, near = str(int((time.time() + 60) * 1000)), str(int((time.time() + 0.3) * 1000))
    payloads = []
    for i in range(1500):
        value: dict = {"i": i}
        if i % 50 == 25:
            value["crash"] = True
        elif i % 75 == 74:
            value["sleep"] = 5
        slow = value.get("sleep")
        payloads.append({"value": value, "activation_id": uuid.uuid4().hex, "deadline": near if slow else far})
    answers = run_async(proxy, payloads, timeout=120)
    for payload, (status, body) in zip(payloads, answers):
        value = payload["value"]
        if value.get("crash"):
            assert status == 400 and "command exited" in body["error"], (value, status, body)
        elif value.get("sleep"):  # killed while it ran, or cancelled if still waiting its turn
            assert status == 502 and body["error"].startswith(DEADLINE_PASSED), (value, status, body)
        else:
            assert status == 200 and body["i"] == value["i"], (value, status, body)
    wait_until(lambda: proxy.run({"i": "after"})[0] == 200, "the proxy serves after it all")


def test_the_pace_gives_fast_runs_a_queue_and_slow_ones_none() -> None:
    runs = pace.Pace()
    assert runs.depth == 1  # nothing seen yet: one at a time
    for _ in range(100):
        runs.observe(50e-6)
    assert runs.depth == pace.MAX_DEPTH  # 40 such runs fit the budget; the cap holds
    for _ in range(100):
        runs.observe(500e-6)
    assert runs.depth == 4
    runs.observe(0.5)  # one slow run: one at a time until SLOW_MEMORY fast ones have passed
    for _ in range(pace.SLOW_MEMORY):
        assert runs.depth == 1
        runs.observe(50e-6)
    assert runs.depth > 1


def test_a_worker_whose_run_goes_on_takes_no_more(tmp_path: Path) -> None:
    """However fast the usual pace, a run older than JOIN_WITHIN gathers no queue behind it."""
    async def scenario() -> None:
        worker = await start_worker(tmp_path)
        try:
            await asyncio.wait_for(asyncio.gather(*(worker.send(n) for n in range(pace.SLOW_MEMORY + 40))), 30)
            assert worker.channel.pace.depth > 1
            held = worker.send(100, hold=True)
            await eventually(lambda: worker.ran(100), "the held run starts")
            await asyncio.sleep(pace.JOIN_WITHIN * 2)
            assert not worker.channel.has_room
            worker.release()
            await asyncio.wait_for(held, 30)
            assert worker.channel.has_room
        finally:
            worker.executor.close()

    asyncio.run(scenario())
