"""Deadline watching without a timer per activation.

Activations are grouped by deadline rounded up to a tick; one loop timer per tick fires all of
its group. Adding and removing are a set operation, which costs far less than a loop timer
created and cancelled for every request. Deadlines are never enforced early, at most a tick late.
"""

from __future__ import annotations

import asyncio
import math
from typing import Callable

TICK = 0.02


class DeadlineWheel:
    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK) -> None:
        self._loop = loop
        self._tick = tick
        self._groups: dict[int, set[Callable[[], None]]] = {}

    def watch(self, when: float, expire: Callable[[], None]) -> set[Callable[[], None]]:
        """Call `expire` once `when` (loop time) has passed; returns what `forget` takes."""
        slot = math.ceil(when / self._tick)
        group = self._groups.get(slot)
        if group is None:
            group = self._groups[slot] = set()
            self._loop.call_at(slot * self._tick, self._fire, slot)
        group.add(expire)
        return group

    @staticmethod
    def forget(group: set[Callable[[], None]], expire: Callable[[], None]) -> None:
        group.discard(expire)

    def _fire(self, slot: int) -> None:
        for expire in self._groups.pop(slot, ()):
            expire()
