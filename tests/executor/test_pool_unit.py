"""ChannelPool on fake channels: the queue's rules checked step by step, with no process and no
clock (what the end-to-end tests in test_queueing.py can only show statistically)."""

from __future__ import annotations

import asyncio

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.executor.channel import NOT_STARTED
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

    def die(self) -> None:
        """As a serial process's channel does: the running one fails, those behind it never ran."""
        if not self.dead.done():
            self.dead.set_result("crashed")
        for n, future in enumerate(self.inflight.values()):
            future.set_result(NOT_STARTED if n else errors.command_exited("crashed"))
        self.inflight.clear()

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


def test_serial_channels_that_may_hold_several_fill_one_before_the_next() -> None:
    """One wake-up of a worker runs all it holds: the busiest with room is filled first."""
    async def scenario() -> None:
        first, second = FakeChannel(1), FakeChannel(2)
        first.capacity = second.capacity = 3
        pool = ChannelPool(lambda: asyncio.sleep(3600), 2, 0.1)
        pool.adopt(first)
        pool.adopt(second)
        runs = [asyncio.ensure_future(pool.run(activation(f"a{i}"))) for i in range(4)]
        await settle()
        assert (first.sent, second.sent) == (["a0", "a1", "a2"], ["a3"])
        for channel, held in ((first, 3), (second, 1)):
            for _ in range(held):
                channel.finish()
        assert [r.status for r in await asyncio.gather(*runs)] == [200] * 4
        pool.close()

    asyncio.run(scenario())


def test_the_queued_ones_of_a_dead_worker_go_back_in_line_by_arrival() -> None:
    """They never started: they run on another worker, ahead of those that came after them."""
    async def scenario() -> None:
        crashed, spare = FakeChannel(1), FakeChannel(2)
        crashed.capacity = 3
        pool = ChannelPool(lambda: asyncio.sleep(3600), 2, 0.1)
        pool.adopt(crashed)
        runs = [asyncio.ensure_future(pool.run(activation(f"a{i}"))) for i in range(5)]
        await settle()
        assert crashed.sent == ["a0", "a1", "a2"]
        crashed.die()
        await settle()
        assert runs[0].result() == errors.command_exited("crashed")
        pool.adopt(spare)
        for _ in range(4):
            await settle()
            spare.finish()
        await settle()
        assert spare.sent == ["a1", "a2", "a3", "a4"]
        assert [r.result().status for r in runs[1:]] == [200] * 4
        pool.close()

    asyncio.run(scenario())


def test_at_close_the_queued_ones_of_a_worker_are_answered_not_queued_again() -> None:
    """Closing kills the workers; what they held has nowhere to go and must not hang."""
    async def scenario() -> None:
        worker = FakeChannel(1)
        worker.capacity = 3
        pool = ChannelPool(lambda: asyncio.sleep(3600), 2, 0.1)
        pool.adopt(worker)
        runs = [asyncio.ensure_future(pool.run(activation(f"a{i}"))) for i in range(3)]
        await settle()
        pool.close()
        worker.die()  # as the killed worker's channel answers what it held
        answers = await asyncio.wait_for(asyncio.gather(*runs), 5)
        assert answers == [errors.command_exited("crashed"), NOT_STARTED, NOT_STARTED]

    asyncio.run(scenario())
