"""Action-loop executables (bash, Go, Rust ... any OpenWhisk action-loop binary) in a pool.

A v1 executable handles one activation at a time, so concurrency comes from more
processes, started on demand. An executable whose ack advertises protocol 2 multiplexes
on its own, so it gets exactly one process.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from actionproxy.activation import Activation, ActivationResult
from actionproxy.archive import ActionSource
from actionproxy.executor.options import ExecutableOptions
from actionproxy.diagnostics import trace_lifetime
from actionproxy.executor import InitError
from actionproxy.executor.channel import ActionLoopChannel, ChannelDied
from actionproxy.executor.pool import ChannelPool
from actionproxy.executor.process import ProcessHandle, spawn
from actionproxy.executor.stemcell import proxy_environ

# Alive this long without an ack = started. The reference proxy waits 5 ms, too short on a
# loaded machine to see a script that fails at once; an ack ends the wait early.
START_GRACE = 0.05


def child_env(init_env: dict[str, str], wait_for_ack: bool) -> dict[str, str]:
    env = proxy_environ()
    if wait_for_ack:
        env["__OW_WAIT_FOR_ACK"] = "1"
    env.update(init_env)
    return env


class ExecutableExecutor:
    def __init__(self, options: ExecutableOptions, passthrough: Callable[[bool, bytes], None]) -> None:
        self._options = options
        self._limits = options.limits
        self._passthrough = passthrough
        self._argv: list[str] = []
        self._cwd = ""
        self._env: dict[str, str] = {}
        self._pool: ChannelPool | None = None

    async def init(self, source: ActionSource, env: dict[str, str]) -> None:
        self._argv = [str(source.root / source.entry)]
        self._cwd = str(source.root)
        self._env = child_env(env, self._options.wait_for_ack)
        try:
            channel = await self._start()
        except ChannelDied as exc:
            raise InitError("start", f"cannot start action: {exc}") from None
        except OSError as exc:
            raise InitError("start", f"cannot start action: {exc}") from None
        v2 = channel.protocol == 2
        self._pool = ChannelPool(self._start, 1 if v2 else self._limits.processes,
                                 self._limits.cancel_grace, keep=1 if v2 else 0)
        self._pool.adopt(channel)

    async def _start(self) -> ActionLoopChannel:
        loop = asyncio.get_running_loop()
        child = spawn(self._argv, self._env, cwd=self._cwd, capture_output=True)
        channel = ActionLoopChannel(
            loop, ProcessHandle(loop, child.pid, own_child=True), child.results, child.stdin,
            self._limits.log_bytes, stdout_fd=child.stdout, stderr_fd=child.stderr,
            passthrough=self._passthrough)
        trace_lifetime("action process", channel.pid, channel.dead)
        if self._options.wait_for_ack:
            try:
                await channel.ack
            except ChannelDied:
                raise ChannelDied("Command exited abruptly during initialization.") from None
        else:
            await asyncio.wait([channel.ack, channel.dead], timeout=START_GRACE,
                               return_when=asyncio.FIRST_COMPLETED)
            if not channel.alive:
                raise ChannelDied("command exited")
            channel.assume_v1()
        if channel.protocol == 2:
            channel.capacity = 0
        return channel

    async def run(self, activation: Activation) -> ActivationResult:
        assert self._pool is not None
        return await self._pool.run(activation)

    def watched(self) -> list[ActionLoopChannel]:
        return self._pool.watched() if self._pool is not None else []

    @property
    def restarts(self) -> int:
        """A multiplexing (v2) executable restarted; v1 processes come and go with the load."""
        return self._pool.restarts if self._pool is not None else 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
