"""How `def main` activations wait for a worker: one FIFO queue, a slot taken and the
activation sent in one step, deadlines that pass in the queue answered without a worker.

Before: waiting for a worker ran as its own task (`wait_for`) that returned a worker with room
without reserving it, so with deadlines set many activations were sent to one worker (up to
1,550 queued on it) and about 600 of 2,000 failed at their deadline. Real proxies, real forked
workers, real HTTP; nothing is timed, deadlines are far past what the work needs.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aiohttp

from conftest import run_async

NAPPER = """
import os, time

def main(args):
    started = time.time()
    time.sleep(args.get("sleep", 0.05))
    return {"i": args.get("i"), "pid": os.getpid(), "started": started}
"""


def deadline_in(seconds: float) -> str:
    return str(int((time.time() + seconds) * 1000))


def test_thousands_of_activations_with_deadlines_spread_over_the_workers(start_proxy) -> None:
    """2,000 runs of a 50 ms def main at once, each with a deadline 30 s ahead (32 workers need
    about 3 s of sleeping for them): every one answers, and each worker ran its share in turn."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_WORKERS": "32"})
    assert proxy.init(NAPPER) == (200, {"ok": True})
    n = 2000
    deadline = deadline_in(30)
    results = run_async(proxy, [{"value": {"i": i}, "activation_id": uuid.uuid4().hex, "deadline": deadline}
                                for i in range(n)], timeout=120)
    failed = [(status, body) for status, body in results if status != 200]
    assert not failed, f"{len(failed)} of {n} failed, e.g. {failed[:3]}"
    assert [body["i"] for _, body in results] == list(range(n))
    per_worker: dict[int, int] = {}
    for _, body in results:
        per_worker[body["pid"]] = per_worker.get(body["pid"], 0) + 1
    assert max(per_worker.values()) < n // 4, f"one worker ran {max(per_worker.values())} of {n}"


def test_a_deadline_that_passes_in_the_queue_touches_no_worker(start_proxy) -> None:
    """With one worker busy for 3 s, activations whose deadline is 0.5 s away are answered with
    the deadline error (cancelled, not killed) while they wait; the busy worker finishes its own
    activation, and it is the same worker that serves the next one."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_WORKERS": "1"})
    assert proxy.init(NAPPER) == (200, {"ok": True})

    async def scenario() -> tuple[tuple[int, dict], list[tuple[int, dict]]]:
        async with aiohttp.ClientSession() as session:
            async def run(payload: dict) -> tuple[int, dict]:
                async with session.post(proxy.base + "/run", json=payload) as response:
                    return response.status, await response.json(content_type=None)
            busy = asyncio.ensure_future(run({"value": {"i": "busy", "sleep": 3}}))
            await asyncio.sleep(0.5)
            late = [run({"value": {"i": i}, "deadline": deadline_in(0.5)}) for i in range(5)]
            return await busy, list(await asyncio.gather(*late))

    (status, busy), late = asyncio.run(scenario())
    assert status == 200 and busy["i"] == "busy"
    assert late == [(502, {"error": "The action did not finish by its deadline and it was cancelled."})] * 5
    status, after = proxy.run({"i": "after", "sleep": 0})
    assert status == 200 and after["pid"] == busy["pid"]


def test_a_deadline_passed_on_arrival_touches_no_worker(start_proxy) -> None:
    """An activation whose deadline has passed when it arrives (but is later than the proxy's
    start, so it is enforced) is answered at once; the idle worker is not started on it."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_WORKERS": "1"})
    assert proxy.init(NAPPER) == (200, {"ok": True})
    status, first = proxy.run({"i": 0, "sleep": 0})
    for _ in range(5):
        assert proxy.run({"i": 1}, deadline=deadline_in(-0.001)) == (
            502, {"error": "The action did not finish by its deadline and it was cancelled."})
    status, after = proxy.run({"i": 2, "sleep": 0})
    assert status == 200 and after["pid"] == first["pid"]


def test_waiting_activations_run_in_arrival_order(start_proxy) -> None:
    """One worker, held for 0.5 s; 12 activations arrive 40 ms apart meanwhile, then 12 more
    arrive while the first ones run: each starts in the order it arrived, none goes ahead of
    one that waited longer."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_WORKERS": "1"})
    assert proxy.init(NAPPER) == (200, {"ok": True})

    async def scenario() -> list[dict]:
        async with aiohttp.ClientSession() as session:
            async def run(payload: dict) -> dict:
                async with session.post(proxy.base + "/run", json=payload) as response:
                    assert response.status == 200
                    return await response.json(content_type=None)
            tasks = [asyncio.ensure_future(run({"value": {"i": -1, "sleep": 0.5}}))]
            for i in range(24):
                await asyncio.sleep(0.04)
                tasks.append(asyncio.ensure_future(run({"value": {"i": i, "sleep": 0.02}})))
            return list(await asyncio.gather(*tasks))

    results = asyncio.run(scenario())
    by_start = [body["i"] for body in sorted(results, key=lambda body: body["started"])]
    assert by_start == [-1, *range(24)]
