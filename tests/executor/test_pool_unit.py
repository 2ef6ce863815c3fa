"""ChannelPool on fake channels: the queue's rules checked step by step, with no process and no
clock (what the end-to-end tests in test_queueing.py can only show statistically)."""

from __future__ import annotations

import asyncio

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.executor.pool import ChannelPool


class FakeChannel:
    """One slot; the test decides when each activation it was sent finishes."""

    def __init__(self, pid: int) -> None:
        loop = asyncio.get_running_loop()
        self.pid = pid
        self.capacity = 1
        self.inflight: dict[int, asyncio.Future[ActivationResult]] = {}
        self.sent: list[str] = []
        self.dead: asyncio.Future[str] = loop.create_future()

    @property
    def serial(self) -> bool:
        return self.capacity != 0

    @property
    def has_room(self) -> bool:
        return not self.dead.done() and len(self.inflight) < self.capacity

    def submit(self, activation: Activation) -> asyncio.Future[ActivationResult]:
        assert self.has_room, f"{activation.activation_id} sent to a full channel {self.pid}"
        future = asyncio.get_running_loop().create_future()
        self.inflight[id(activation)] = future
        self.sent.append(activation.activation_id)
        return future

    def finish(self) -> None:
        _, future = self.inflight.popitem()
        future.set_result(ActivationResult(200, b'{"ok":true}'))

    def abandon(self, activation: Activation, grace: float) -> bool:
        self.inflight.pop(id(activation), None)
        self.dead.set_result("killed at its activation's deadline")
        return True

    def kill(self, reason: str) -> None:
        if not self.dead.done():
            self.dead.set_result(reason)


def activation(name: str, deadline: float | None = None) -> Activation:
    return Activation(b"{}", name, deadline, {})


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_freed_slot_goes_to_the_oldest_waiter_not_to_a_newcomer() -> None:
    async def scenario() -> None:
        channel = FakeChannel(1)
        pool = ChannelPool(lambda: asyncio.sleep(3600), 1, 0.1)  # never grows
        pool.adopt(channel)
        runs = [asyncio.ensure_future(pool.run(activation(f"a{i}"))) for i in range(3)]
        await settle()
        assert channel.sent == ["a0"]
        channel.finish()  # the slot is handed to a1 in the same step...
        late = asyncio.ensure_future(pool.run(activation("newcomer")))  # ...so this one queues
        await settle()
        assert channel.sent == ["a0", "a1"]
        for _ in range(3):
            channel.finish()
            await settle()
        assert channel.sent == ["a0", "a1", "a2", "newcomer"]
        assert [r.result().status for r in runs] == [200, 200, 200] and (await late).status == 200
        pool.close()

    asyncio.run(scenario())


def test_a_deadline_in_the_queue_answers_without_touching_the_channel() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        channel = FakeChannel(1)
        pool = ChannelPool(lambda: asyncio.sleep(3600), 1, 0.1)
        pool.adopt(channel)
        busy = asyncio.ensure_future(pool.run(activation("busy")))
        await settle()
        result = await pool.run(activation("late", deadline=loop.time() + 0.05))
        assert result == errors.deadline_passed(killed=False)
        assert channel.sent == ["busy"] and not channel.dead.done()
        channel.finish()
        assert (await busy).status == 200
        pool.close()

    asyncio.run(scenario())


def test_a_deadline_while_running_abandons_the_run() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        channel = FakeChannel(1)
        pool = ChannelPool(lambda: asyncio.sleep(3600), 1, 0.1)
        pool.adopt(channel)
        result = await pool.run(activation("slow", deadline=loop.time() + 0.05))
        assert result == errors.deadline_passed(killed=True) and channel.dead.done()
        pool.close()

    asyncio.run(scenario())
