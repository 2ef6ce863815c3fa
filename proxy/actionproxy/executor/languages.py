"""Language launchers (runtimes/<lang>/launcher.*) speaking protocol v2: stem cell, async, zygote.

The launcher process is started before `/init` (a "stem cell" with its runtime imported), so
`/init` only loads the user's code. The launcher then reports a mode:
- async: it multiplexes every activation itself; ACTIONPROXY_LAUNCHERS such processes (one by
  default) share the activations, fewest in flight first, each restarted if it dies, so that
  a crash fails only the activations of its own launcher;
- sync: it is a zygote; each FORK frame forks a worker from the loaded action, which
  connects back to our Unix socket and runs one activation at a time. Workers are added on
  demand up to the configured maximum, and a stuck one is killed alone. A zygote that says
  `"pipeline": true` has workers that take several RUNs in turn (their pace decides how many).
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import struct
from typing import Callable

import orjson

from actionproxy.activation import Activation, ActivationResult
from actionproxy.archive import ActionSource
from actionproxy.diagnostics import trace_lifetime
from actionproxy.executor import InitError, frames
from actionproxy.executor.channel import ActionLoopChannel, ChannelDied
from actionproxy.executor.pool import ChannelPool
from actionproxy.executor.process import ProcessHandle, SpawnedProcess, stat_fields
from actionproxy.executor.options import LauncherOptions
from actionproxy.executor.pace import MAX_DEPTH, Pace
from actionproxy.executor.stemcell import worker_socket_path

FORK_TIMEOUT = 10.0
PEERCRED = struct.Struct("3i")


def parent_pid(pid: int) -> int | None:
    try:
        return int(stat_fields(pid)[1])
    except (OSError, IndexError, ValueError):
        return None


class LauncherExecutor:
    def __init__(self, options: LauncherOptions, passthrough: Callable[[bool, bytes], None],
                 stem: SpawnedProcess | None = None, socket_path: str | None = None) -> None:
        self._options = options
        self._limits = options.limits
        self._passthrough = passthrough
        self._socket_path = socket_path or worker_socket_path()
        self._stem = stem
        self._spec = b""
        self._pool: ChannelPool | None = None
        self._zygote: ActionLoopChannel | None = None
        self._listener: socket.socket | None = None
        self._forks: collections.deque[asyncio.Future[tuple[int, int]]] = collections.deque()
        self._zygote_restarts = 0
        self._pace: Pace | None = None  # the workers' pace, if they take RUNs in turn

    # ------------------------------------------------------------------ loading
    def _channel(self, child: SpawnedProcess) -> ActionLoopChannel:
        loop = asyncio.get_running_loop()
        return ActionLoopChannel(loop, ProcessHandle(loop, child.pid, own_child=True),
                                 child.results, child.stdin, self._limits.log_bytes,
                                 trusted=True, passthrough=self._passthrough)

    async def _load(self) -> tuple[ActionLoopChannel, dict]:
        """A launcher with the action loaded; raises InitError."""
        stem, self._stem = self._stem, None
        channel = self._channel(stem or self._options.start(self._socket_path))
        trace_lifetime("launcher", channel.pid, channel.dead)
        try:
            await channel.ack
            if channel.protocol != 2:
                channel.kill("not a protocol 2 launcher")
                raise InitError("start", "the launcher does not speak protocol 2")
            channel.send(frames.INIT, self._spec)
            reply = await channel.init_done
        except ChannelDied:
            raise InitError("start", "Command exited abruptly during initialization.") from None
        if not reply.get("ok"):
            channel.kill("init failed")
            raise InitError(reply.get("error", "start"))
        if reply.get("mode") not in ("async", "sync"):
            channel.kill("unknown mode")
            raise InitError("start", f"the launcher reported an unknown mode: {reply.get('mode')!r}")
        return channel, reply

    async def init(self, source: ActionSource, env: dict[str, str]) -> None:
        self._spec = orjson.dumps({"root": str(source.root), "entry": source.entry,
                                   "main": source.main, "env": env, "source": source.source})
        channel, reply = await self._load()
        grace = self._limits.cancel_grace
        if reply.get("mode") == "async":
            channel.capacity = 0
            count = self._options.launchers
            more = await asyncio.gather(*(self._restart_async() for _ in range(count - 1)),
                                        return_exceptions=True)
            started = [channel, *(c for c in more if isinstance(c, ActionLoopChannel))]
            failed = next((e for e in more if isinstance(e, BaseException)), None)
            if failed is not None:
                for one in started:
                    one.kill("another launcher failed to load the action")
                raise failed if isinstance(failed, InitError) else InitError("start", str(failed))
            self._pool = ChannelPool(self._restart_async, count, grace, keep=count)
            for one in started:
                self._pool.adopt(one)
            return
        self._zygote = channel
        if reply.get("pipeline") is True:
            self._pace = Pace()
        channel.on_worker_exit = self._worker_exited
        self._listen()
        self._pool = ChannelPool(self._fork_worker, self._limits.processes, grace)
        try:
            self._pool.adopt(await self._fork_worker())
        except (ChannelDied, OSError) as exc:
            raise InitError("start", str(exc)) from None

    async def _restart_async(self) -> ActionLoopChannel:
        channel, _ = await self._load()
        channel.capacity = 0
        return channel

    # ------------------------------------------------------------------ sync workers
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self._socket_path)
        listener.listen(64)
        listener.setblocking(False)
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)
        self._listener = listener

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        pid, uid, _ = PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
        while self._forks and self._forks[0].done():
            self._forks.popleft()
        if not self._forks or uid != os.getuid() or not self._forked_by_zygote(pid):
            conn.close()  # nobody asked for it: a late worker, or not one of ours at all
            return
        self._forks.popleft().set_result((conn.detach(), pid))

    def _worker_exited(self, pid: int, detail: str) -> None:
        for channel in self._pool.watched() if self._pool is not None else []:
            if channel.pid == pid:
                channel.process.report(detail)

    def _forked_by_zygote(self, pid: int) -> bool:
        zygote = self._zygote
        return zygote is not None and parent_pid(pid) == zygote.process.pid

    async def _fork_worker(self) -> ActionLoopChannel:
        zygote = self._zygote
        if zygote is None or not zygote.alive:
            if zygote is not None:
                self._zygote_restarts += 1
            zygote, _ = await self._load()
            zygote.on_worker_exit = self._worker_exited
            self._zygote = zygote
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._forks.append(waiter)
        zygote.send(frames.FORK)
        await asyncio.wait([waiter, zygote.dead], timeout=FORK_TIMEOUT,
                           return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            why = f"the zygote ended: {zygote.dead.result()}" if zygote.dead.done() else "timed out"
            raise ChannelDied(f"cannot fork a worker ({why})")
        fd, pid = waiter.result()
        channel = ActionLoopChannel(loop, ProcessHandle(loop, pid, own_child=False), fd, os.dup(fd),
                                    self._limits.log_bytes, protocol=2, trusted=True,
                                    passthrough=self._passthrough)
        if self._pace is not None:
            channel.capacity, channel.pace = MAX_DEPTH, self._pace
        return channel

    # ------------------------------------------------------------------ running
    @property
    def restarts(self) -> int:
        """Async launchers restarted by the pool, and zygotes loaded again for a fork."""
        return (self._pool.restarts if self._pool is not None else 0) + self._zygote_restarts

    def watched(self) -> list[ActionLoopChannel]:
        zygote = [self._zygote] if self._zygote is not None and self._zygote.alive else []
        return (self._pool.watched() if self._pool is not None else []) + zygote

    async def run(self, activation: Activation) -> ActivationResult:
        assert self._pool is not None
        return await self._pool.run(activation)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._zygote is not None:
            self._zygote.kill("the proxy is shutting down")
        if self._stem is not None:
            os.close(self._stem.stdin)  # the stem cell exits at EOF
            os.close(self._stem.results)
            self._stem = None
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            os.unlink(self._socket_path)
            os.rmdir(os.path.dirname(self._socket_path))
