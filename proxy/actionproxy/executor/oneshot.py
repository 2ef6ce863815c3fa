"""One process per activation, by the dockerskeleton's rules (spec b.9), but in parallel.

Each activation starts `exec` with the JSON of `value` as `$1` (when it fits in one argument)
and on stdin, in the action folder. Its stdout is read as it comes: every line but the last is
log, the last non-blank line is the result. Logs are streamed into the activation's bounded
log buffer instead of being held whole, and at the deadline the process is killed with its
whole process group.
"""

from __future__ import annotations

import asyncio
from typing import Callable

import orjson

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.archive import ActionSource
from actionproxy.executor.futures import settle
from actionproxy.executor.options import OneshotOptions
from actionproxy.envvars import first_unexportable
from actionproxy.executor.deadlines import DeadlineWheel
from actionproxy.executor.fdio import FdReader, FdWriter
from actionproxy.executor.executables import child_env
from actionproxy.executor.process import Abortable, ProcessHandle, spawn_plain
from actionproxy.tracecontext import FIELDS

MAX_ARG = 131071  # Linux MAX_ARG_STRLEN - 1: a longer JSON goes on stdin only, as in the skeleton
EXIT_GRACE = 0.5  # after exit, how long children of exec may keep its stdout open


def context_env(request: dict) -> dict[str, str]:
    """`__OW_<KEY>` for every top-level field but `value`; non-strings as compact JSON; the
    trace context also as TRACEPARENT and TRACESTATE."""
    env = {}
    for key, val in request.items():
        if key != "value":
            env["__OW_" + key.upper()] = val if isinstance(val, str) else (
                "" if val is None else orjson.dumps(val).decode())
    for key in FIELDS:
        if "__OW_" + key.upper() in env:
            env[key.upper()] = env["__OW_" + key.upper()]
    return env


class StdoutSplitter:
    """Streams stdout lines into the logs, holding back the last non-blank one: the result."""

    def __init__(self, activation: Activation, log_limit: int, line_limit: int) -> None:
        self._logs = activation.logs
        self._log_limit = log_limit
        self._line_limit = line_limit
        self._partial = b""
        self._last: bytes | None = None
        self._blanks = b""
        self.overflow = False

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > self._line_limit:
            self.overflow = True
            self._partial = b""
        for line in lines:
            self._line(line)

    def _line(self, line: bytes) -> None:
        if not line.strip():
            self._blanks += line + b"\n"
            return
        if self._last is not None:
            self._logs.add(False, self._last + b"\n" + self._blanks, self._log_limit)
        self._last, self._blanks = line, b""

    def result_line(self) -> bytes:
        if self._partial:
            self._line(self._partial)
            self._partial = b""
        return (self._last or b"").strip()


class OneshotExecutor:
    def __init__(self, options: OneshotOptions, passthrough: Callable[[bool, bytes], None]) -> None:
        self._options = options
        self._log_bytes = options.limits.log_bytes
        self._argv0 = ""
        self._cwd = ""
        self._env: dict[str, str] = {}
        self._slots: asyncio.Semaphore | None = None
        self._deadlines: DeadlineWheel | None = None
        self._running: set[Abortable] = set()
        self._closed = False

    async def init(self, source: ActionSource, env: dict[str, str]) -> None:
        self._argv0 = str(source.root / source.entry)
        self._cwd = str(source.root)
        self._env = child_env(env, wait_for_ack=False)
        self._slots = asyncio.Semaphore(self._options.limits.processes)
        self._deadlines = DeadlineWheel(asyncio.get_running_loop())

    async def run(self, activation: Activation) -> ActivationResult:
        assert self._slots is not None
        async with self._slots:
            if self._closed:
                return errors.shutting_down()
            return await self._run(activation)

    async def _run(self, activation: Activation) -> ActivationResult:
        loop = asyncio.get_running_loop()
        request = activation.context()
        value = orjson.dumps(request.get("value", {}))
        argv = [self._argv0] + ([value.decode()] if len(value) <= MAX_ARG else [])
        context = context_env(request)
        unexportable = first_unexportable(context)
        if unexportable is not None:
            field = next(k for k in request if "__OW_" + k.upper() == unexportable)
            return errors.unexportable_field(field, unexportable)
        env = {**self._env, **context}
        try:
            child = spawn_plain(argv, env, self._cwd)
        except OSError as exc:
            activation.logs.add(True, f"Cannot start the action: {exc}\n".encode(), self._log_bytes)
            return errors.error(502, errors.COMPILE_FAILED)
        process = ProcessHandle(loop, child.pid, own_child=True)
        running = Abortable(process)
        self._running.add(running)
        stdout = StdoutSplitter(activation, self._log_bytes, self._options.max_line)
        eofs = [loop.create_future(), loop.create_future()]
        readers = [
            FdReader(loop, child.stdout, stdout.feed, lambda: settle(eofs[0], None)),
            FdReader(loop, child.stderr, lambda data: activation.logs.add(True, data, self._log_bytes),
                     lambda: settle(eofs[1], None)),
        ]
        stdin = FdWriter(loop, child.stdin)
        stdin.write(value, now=True)
        stdin.close_when_flushed()
        killed_at_deadline = False

        def expire() -> None:
            nonlocal killed_at_deadline
            killed_at_deadline = True
            process.kill()

        watched = None if activation.deadline is None else self._deadlines.watch(activation.deadline, expire)
        try:
            detail = await process.exited
            await asyncio.wait(eofs, timeout=EXIT_GRACE)
        finally:
            if watched is not None:
                self._deadlines.forget(watched, expire)
            self._running.discard(running)
            process.kill()  # whatever it left behind in its process group
            for reader in readers:
                reader.drain()
                reader.close()
            stdin.close()
        if killed_at_deadline:
            return errors.deadline_passed(killed=True)
        if running.verdict is not None:
            return errors.error(502, running.verdict)
        if stdout.overflow:
            activation.logs.add(True, f"The action wrote a line longer than {self._options.max_line} bytes.\n".encode(),
                                self._log_bytes)
            return errors.not_a_dict()
        return self._result(activation, stdout.result_line(), detail)

    def _result(self, activation: Activation, line: bytes, detail: str) -> ActivationResult:
        if line[:1] in (b"{", b"["):
            try:
                orjson.loads(line)
                return ActivationResult(200, line)
            except orjson.JSONDecodeError:
                pass
        limit = self._log_bytes
        if line:  # like the skeleton: the offending last line goes to the logs
            activation.logs.add(False, line + b"\n", limit)
        if detail != "exit code 0":
            activation.logs.add(True, f"The action's process ended: {detail}.\n".encode(), limit)
        return errors.not_a_dict()

    def watched(self) -> list[Abortable]:
        return list(self._running)

    restarts = 0  # nothing lives between activations

    def close(self) -> None:
        """Nothing is kept between activations; whatever still runs (the drain period is
        over) is killed with its process group, and activations waiting for a slot get none."""
        self._closed = True
        for running in list(self._running):
            running.abort("the proxy is shutting down")
