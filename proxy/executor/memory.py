"""Memory watch: the runtime's processes against a limit (psutil), so that the proxy, not the
kernel's OOM killer, decides what dies, and the platform hears why.

Over the limit, the process (tree) using the most is killed; its in-flight activations fail
with OpenWhisk's out-of-memory message, and the executor restarts it as after any crash.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable, Iterable, Protocol

import psutil

EXHAUSTED = "The action exhausted its memory and was aborted."


class Watched(Protocol):
    """A process the guard may kill: its pid, and how to abort it with a message."""

    pid: int

    def abort(self, message: str) -> None: ...


def tree_rss(pid: int) -> int:
    """Resident memory of a process and everything it started."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total


class MemoryGuard:
    def __init__(self, limit: int, watched: Callable[[], Iterable[Watched]], interval: float = 0.1) -> None:
        self.limit = limit
        self._watched = watched
        self._interval = interval
        self._task: asyncio.Task | None = None
        self.kills = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()

    def check(self) -> None:
        usage = [(tree_rss(item.pid), item) for item in self._watched()]
        total = sum(rss for rss, _ in usage)
        if total <= self.limit or not usage:
            return
        rss, victim = max(usage, key=lambda pair: pair[0])
        self.kills += 1
        os.write(2, f"actionproxy: the action's processes use {total} bytes, over the limit of "
                    f"{self.limit}; killing pid {victim.pid} ({rss} bytes)\n".encode())
        victim.abort(EXHAUSTED)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
