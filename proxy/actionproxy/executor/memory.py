"""Memory watch: the runtime's processes against a limit (psutil), so that the proxy, not the
kernel's OOM killer, decides what dies, and the platform hears why.

Each process is counted once, by what it really costs: forked workers share their zygote's
pages copy-on-write, so resident sizes would count those pages once per worker (33 processes:
600 MB resident, 61 MB unique). The total is the sum of proportional sizes (PSS: a shared page
split among its sharers), measured only when the cheap resident sum is over the limit. Every
process belongs to the nearest watched process above it (a launcher, a zygote, a worker), and
the one whose processes hold the most unique memory (USS) is killed: the process that grew,
never the zygote for its workers' memory. Its in-flight activations fail with OpenWhisk's
out-of-memory message, and the executor restarts it as after any crash.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from actionproxy.diagnostics import log

if TYPE_CHECKING:  # imported when the first check runs, off the cold-start path
    import psutil

EXHAUSTED = "The action exhausted its memory and was aborted."


class Watched(Protocol):
    """A process the guard may kill: its pid, and how to abort it with a message."""

    pid: int

    def abort(self, message: str) -> None: ...


@dataclass
class Group:
    """A watched process and the processes it started that no other watched process owns."""

    item: Watched
    processes: list[psutil.Process] = field(default_factory=list)

    def rss(self) -> int:
        return sum(_measure(p, lambda p: p.memory_info().rss) for p in self.processes)

    def pss_and_uss(self) -> tuple[int, int]:
        full = [_measure(p, lambda p: p.memory_full_info()) for p in self.processes]
        return sum(m.pss for m in full if m), sum(m.uss for m in full if m)


def _measure(process: psutil.Process, how: Callable) -> Any:
    import psutil

    try:
        return how(process)
    except psutil.Error:  # it ended meanwhile
        return 0


def groups(items: Iterable[Watched]) -> list[Group]:
    """Each watched process with the processes below it, down to the next watched one. Found
    from every process's parent, not from this one's children: a forked worker is re-parented
    (to us as PID 1 in a container, to the host's init elsewhere)."""
    import psutil

    by_pid = {item.pid: Group(item) for item in items}
    processes: dict[int, psutil.Process] = {}
    children: dict[int, list[int]] = {}
    for process in psutil.process_iter(["ppid"]):
        processes[process.pid] = process
        children.setdefault(process.info["ppid"], []).append(process.pid)
    for pid, group in by_pid.items():
        todo = [pid] if pid in processes else []
        while todo:
            below = todo.pop()
            group.processes.append(processes[below])
            todo.extend(child for child in children.get(below, ()) if child not in by_pid)
    return [group for group in by_pid.values() if group.processes]


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
        found = groups(self._watched())
        if sum(group.rss() for group in found) <= self.limit:  # resident >= proportional: fine
            return
        sizes = [(group, *group.pss_and_uss()) for group in found]
        total = sum(pss for _, pss, _ in sizes)
        if total <= self.limit:
            return
        victim, _, unique = max(sizes, key=lambda size: size[2])
        self.kills += 1
        log.warning(f"the action's processes use {total} bytes, over the limit of {self.limit}; "
                    f"killing pid {victim.item.pid} ({unique} bytes of its own)")
        victim.item.abort(EXHAUSTED)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
