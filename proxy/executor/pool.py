"""Runs activations on a set of channels: picks one with room, grows, replaces the dead.

Capacity is per channel (1 for a v1 process or a forked sync worker, unlimited for an
async launcher). When every channel is full and the pool may grow, a new one is started;
otherwise the activation waits for room. Deadlines cover the wait and the run.
"""

from __future__ import annotations

import asyncio
import collections
import os
from typing import Awaitable, Callable

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.executor.channel import ActionLoopChannel
from actionproxy.executor.deadlines import DeadlineWheel

StartChannel = Callable[[], Awaitable[ActionLoopChannel]]
GROW_AFTER = 0.005  # seconds an activation waits for a busy process before another is started


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class StartFailed(Exception):
    """A replacement channel could not be started; the message is for the logs."""


class ChannelPool:
    def __init__(self, start: StartChannel, max_channels: int, cancel_grace: float,
                 keep_one: bool = False) -> None:
        self._start = start
        self._max = max_channels
        self._grace = cancel_grace
        self._keep_one = keep_one
        self.channels: list[ActionLoopChannel] = []
        self._starting = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        self._deadlines = DeadlineWheel(asyncio.get_running_loop())
        self.restarts = 0

    def adopt(self, channel: ActionLoopChannel) -> None:
        self.channels.append(channel)
        channel.dead.add_done_callback(lambda _: self._forget(channel))

    def _forget(self, channel: ActionLoopChannel) -> None:
        if channel in self.channels:
            self.channels.remove(channel)
        if not self._closed:
            os.write(2, f"actionproxy: process {channel.pid} of the action ended "
                        f"({channel.dead.result().rstrip('.')}); it is replaced from the saved init\n".encode())
        self._wake_one()
        if self._keep_one and not self._closed and not self.channels and not self._starting:
            asyncio.get_running_loop().create_task(self._replace())

    async def _replace(self) -> None:
        """Restart the lost channel now, so the next activation does not wait for it."""
        if self._closed:
            return
        try:
            await self._grow(replacing=True)
        except Exception as exc:  # the next activation retries and reports it
            os.write(2, f"actionproxy: cannot restart the action: {exc}\n".encode())

    async def _grow(self, replacing: bool = False) -> None:
        self._starting += 1
        try:
            channel = await self._start()
        except Exception:
            self._wake_one()
            raise
        finally:
            self._starting -= 1
        if replacing:
            self.restarts += 1
        if self._closed:
            channel.kill("the pool is closed")
            return
        self.adopt(channel)
        self._wake_one()

    def _wake_one(self) -> None:
        """A slot may be free: let the longest waiter look (one slot, one waiter)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _acquire(self) -> ActionLoopChannel:
        """A channel with room. A new one is started only when there is none at all, or when
        this activation has waited GROW_AFTER for room: fast actions then keep few processes
        busy (more would only take turns on the CPU), slow ones get as many as they need."""
        loop = asyncio.get_running_loop()
        grow_at = loop.time() + (GROW_AFTER if self.channels else 0.0)
        while True:
            if self._closed:
                raise StartFailed("the proxy is shutting down")
            for channel in self.channels:
                if channel.has_room:
                    return channel
            can_grow = len(self.channels) + self._starting < self._max
            if can_grow and loop.time() >= grow_at:
                try:
                    await self._grow(replacing=not self.channels and self._keep_one)
                except Exception as exc:
                    raise StartFailed(str(exc)) from exc
                continue
            waiter = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_at(grow_at, _wake, waiter) if can_grow else None
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken but gone (deadline): pass the slot on
                raise
            finally:
                if timer is not None:
                    timer.cancel()

    async def run(self, activation: Activation) -> ActivationResult:
        """Run on a channel with room; past `activation.deadline` (loop time) give up on it."""
        loop = asyncio.get_running_loop()
        channel = next((c for c in self.channels if c.has_room), None)
        if channel is None:
            timeout = None if activation.deadline is None else activation.deadline - loop.time()
            try:
                channel = await asyncio.wait_for(self._acquire(), timeout)
            except TimeoutError:
                return errors.deadline_passed(killed=False)
            except StartFailed as exc:
                if not self._closed:  # closed: the proxy is shutting down, nothing to report
                    os.write(2, f"actionproxy: cannot start the action: {exc}\n".encode())
                return errors.error(502, errors.START_FAILED)
        future = channel.submit(activation)
        if activation.deadline is None:
            watched = expire = None
        else:
            def expire() -> None:
                if not future.done():
                    killed = channel.abandon(activation, self._grace)
                    future.set_result(errors.deadline_passed(killed=killed))

            watched = self._deadlines.watch(activation.deadline, expire)
        try:
            return await future
        finally:
            if watched is not None:
                self._deadlines.forget(watched, expire)
            if self._waiters:
                self._wake_one()

    def watched(self) -> list[ActionLoopChannel]:
        return list(self.channels)

    def close(self) -> None:
        self._closed = True
        for channel in list(self.channels):
            channel.kill("the proxy is shutting down")
        for waiter in self._waiters:  # activations waiting for room learn there will be none
            _wake(waiter)
