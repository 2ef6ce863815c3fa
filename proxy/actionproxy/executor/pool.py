"""Runs activations on a set of channels: picks one with room, grows, replaces the dead.

Capacity is per channel (1 for a v1 process or a forked sync worker, unlimited for an
async launcher). An activation that finds no room joins one FIFO queue; a slot that frees is
handed to the queue's head and the activation is sent in the same step, so nobody takes a
slot another was given, and a newcomer never goes ahead of those waiting. When activations
wait and the pool may grow, new channels are started. A deadline that passes in the queue is
answered without touching any process; one that passes while running abandons the run.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import itertools
from typing import Awaitable, Callable

from actionproxy.diagnostics import log
from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.executor.futures import settle
from actionproxy.executor.channel import NOT_STARTED, ActionLoopChannel
from actionproxy.executor.deadlines import DeadlineWheel

StartChannel = Callable[[], Awaitable[ActionLoopChannel]]
GROW_AFTER = 0.005  # seconds activations wait for a busy process before another is started


class _Entry:
    """One activation in the pool: its answer, and the channel it was sent to (None: queued)."""

    __slots__ = ("activation", "answer", "channel", "arrival")
    arrivals = itertools.count()

    def __init__(self, activation: Activation, answer: asyncio.Future[ActivationResult]) -> None:
        self.arrival = next(self.arrivals)  # its place in line, kept if it has to queue again
        self.activation = activation
        self.answer = answer
        self.channel: ActionLoopChannel | None = None


class ChannelPool:
    def __init__(self, start: StartChannel, max_channels: int, cancel_grace: float, keep: int = 0) -> None:
        self._start = start
        self._max = max_channels
        self._grace = cancel_grace
        self._keep = keep  # channels replaced as soon as they end (async launchers)
        self._loop = asyncio.get_running_loop()
        self.channels: list[ActionLoopChannel] = []
        self._starting = 0
        self._queue: collections.deque[_Entry] = collections.deque()
        self._grow_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._deadlines = DeadlineWheel(self._loop)
        self._filling: ActionLoopChannel | None = None  # the serial channel last sent to
        self.restarts = 0

    def adopt(self, channel: ActionLoopChannel) -> None:
        self.channels.append(channel)
        channel.dead.add_done_callback(lambda _: self._forget(channel))
        self._dispatch()

    def _forget(self, channel: ActionLoopChannel) -> None:
        if channel in self.channels:
            self.channels.remove(channel)
        if self._closed:
            return
        log.warning(f"process {channel.pid} of the action ended ({channel.dead.result().rstrip('.')}); "
                    f"it is replaced from the saved init")
        if len(self.channels) + self._starting < self._keep:
            self._loop.create_task(self._grow())
        else:
            self._plan_growth()

    # ------------------------------------------------------------------ growing
    def _room_to_grow(self) -> int:
        return self._max - len(self.channels) - self._starting

    def _plan_growth(self) -> None:
        """Start channels for the queue: at once when there is none, else after GROW_AFTER, so
        fast actions keep few processes busy (more would only take turns on the CPU) and slow
        ones get as many as they need."""
        if not self._queue or self._room_to_grow() <= 0 or self._grow_timer is not None:
            return
        if not self.channels and not self._starting:
            self._loop.create_task(self._grow())
        else:
            self._grow_timer = self._loop.call_later(GROW_AFTER, self._grow_for_queue)

    def _grow_for_queue(self) -> None:
        self._grow_timer = None
        for _ in range(min(self._room_to_grow(), len(self._queue) - self._starting)):
            self._loop.create_task(self._grow())

    async def _grow(self) -> None:
        replacing = len(self.channels) + self._starting < self._keep
        self._starting += 1
        try:
            channel = await self._start()
        except Exception as exc:
            self._starting -= 1
            self._start_failed(str(exc))
            return
        self._starting -= 1
        if replacing:
            self.restarts += 1
        if self._closed:
            channel.kill("the pool is closed")
            return
        self.adopt(channel)

    def _start_failed(self, why: str) -> None:
        """No channel could be started: with none left to wait for, the queue gets the error."""
        if self._closed:
            return
        log.error(f"cannot start the action: {why}")
        if not self.channels and not self._starting:
            self._fail_queue(errors.error(502, errors.START_FAILED))

    def _fail_queue(self, result: ActivationResult) -> None:
        queue, self._queue = self._queue, collections.deque()
        for entry in queue:
            settle(entry.answer, result)

    # ------------------------------------------------------------------ running
    def _free_channel(self) -> ActionLoopChannel | None:
        """A channel with room. Async launchers share the work: the one with the fewest in
        flight. Serial processes that may hold several (forked workers at a fast pace) fill
        up in turn: the one being filled, else the busiest with room, so that one wake-up
        runs many."""
        last = self._filling
        if last is not None and last.inflight and last.has_room:
            return last
        free = None
        for channel in self.channels:
            if not channel.has_room:
                continue
            if not channel.serial:
                if not channel.inflight:
                    return channel
                if free is None or len(channel.inflight) < len(free.inflight):
                    free = channel
            elif free is None or len(channel.inflight) > len(free.inflight):
                free = channel
        return free

    def _send(self, entry: _Entry, channel: ActionLoopChannel) -> None:
        """Taking the slot and sending the activation are one step: no await between them."""
        entry.channel = channel
        if channel.serial:
            self._filling = channel
        channel.submit(entry.activation).add_done_callback(lambda done: self._finished(entry, done))

    def _finished(self, entry: _Entry, done: asyncio.Future[ActivationResult]) -> None:
        if not done.cancelled():
            result = done.result()
            if result is NOT_STARTED and not self._closed:  # its process died before its turn
                entry.channel = None
                if not entry.answer.done():
                    self._requeue(entry)
            else:
                settle(entry.answer, result)
        self._dispatch()

    def _requeue(self, entry: _Entry) -> None:
        """In its place by arrival: ahead of everyone who came after it."""
        place = next((i for i, other in enumerate(self._queue) if other.arrival > entry.arrival), len(self._queue))
        self._queue.insert(place, entry)

    def _dispatch(self) -> None:
        """Hand free slots to the queue, oldest first."""
        while self._queue:
            entry = self._queue[0]
            if entry.answer.done():  # its deadline passed, or its client left
                self._queue.popleft()
                continue
            channel = self._free_channel()
            if channel is None:
                self._plan_growth()
                return
            self._queue.popleft()
            self._send(entry, channel)

    async def run(self, activation: Activation) -> ActivationResult:
        """Run on a channel with room, after those already waiting; past `activation.deadline`
        (loop time) give up on it."""
        if self._closed:
            return errors.error(502, errors.START_FAILED)
        if activation.deadline is not None and activation.deadline <= self._loop.time():
            return errors.deadline_passed(killed=False)
        entry = _Entry(activation, self._loop.create_future())
        if activation.on_chunk is not None:  # a stream's reader may leave before it ends
            activation.abandon = functools.partial(self._client_left, entry)
        channel = None if self._queue else self._free_channel()
        if channel is not None:
            self._send(entry, channel)
        else:
            self._queue.append(entry)
            self._plan_growth()
        if activation.deadline is None:
            return await self._answer(entry)
        expire = functools.partial(self._expire, entry)
        watched = self._deadlines.watch(activation.deadline, expire)
        try:
            return await self._answer(entry)
        finally:
            self._deadlines.forget(watched, expire)

    async def _answer(self, entry: _Entry) -> ActivationResult:
        try:
            return await entry.answer
        finally:
            if entry.channel is None and entry.answer.done():
                try:
                    self._queue.remove(entry)
                except ValueError:
                    pass

    def _expire(self, entry: _Entry) -> None:
        if not entry.answer.done():
            killed = self._abandon(entry)
            settle(entry.answer, errors.deadline_passed(killed=killed))  # the kill may have answered it

    def _client_left(self, entry: _Entry) -> None:
        """Stop the run and answer now: its client went away (a stream it was reading)."""
        if not entry.answer.done():
            self._abandon(entry)
            settle(entry.answer, errors.client_left())

    def _abandon(self, entry: _Entry) -> bool:
        """True if the run's process had to be killed."""
        return entry.channel is not None and entry.channel.abandon(entry.activation, self._grace)

    def watched(self) -> list[ActionLoopChannel]:
        return list(self.channels)

    def close(self) -> None:
        self._closed = True
        if self._grow_timer is not None:
            self._grow_timer.cancel()
        for channel in list(self.channels):
            channel.kill("the proxy is shutting down")
        self._fail_queue(errors.error(502, errors.START_FAILED))  # there will be no room
