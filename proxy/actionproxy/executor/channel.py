"""The proxy's side of the action-loop protocol for one process: v1 lines or v2 frames.

A channel starts by reading the child's ack line on fd 3. `{"ok": true, "protocol": 2}`
switches it to v2 frames (many activations in flight, logs framed per activation);
anything else is v1 (one activation at a time, result = one line on fd 3, logs = whatever
the child writes to its stdout/stderr pipes while that activation runs).
"""

from __future__ import annotations

import asyncio
from typing import Callable

import orjson

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.executor.futures import settle
from actionproxy.executor import frames
from actionproxy.executor.fdio import Chunks, FdReader, FdWriter
from actionproxy.executor.pace import JOIN_WITHIN, Pace
from actionproxy.executor.process import ProcessHandle


EOF_WAIT = 0.5  # seconds between end-of-file on fd 3 and giving up on the exit status


class ProtocolError(Exception):
    """The child broke the protocol (bad ack, bad frame)."""


STREAM_END = b"{}"  # the result that ends a streamed one (docs/PROTOCOL.md)
# what an activation queued behind another in a serial process gets when that process dies: it
# never started, so the pool runs it elsewhere (compared by identity, never sent to a client)
NOT_STARTED = ActivationResult(502, b'{"error":"the process ended before this activation started"}')


class Pending:
    __slots__ = ("activation", "future", "chunks")

    def __init__(self, activation: Activation, future: asyncio.Future[ActivationResult]) -> None:
        self.activation = activation
        self.future = future
        self.chunks: list[bytes] | None = None  # a streamed result's, collected for one answer


class ActionLoopChannel:
    """Sends activations to one process and matches results, logs and its death to them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, process: ProcessHandle, results_fd: int,
                 requests_fd: int, log_limit: int, *, protocol: int | None = None,
                 stdout_fd: int = -1, stderr_fd: int = -1, trusted: bool = False,
                 passthrough: Callable[[bool, bytes], None]) -> None:
        self._loop = loop
        self.process = process
        self.protocol = protocol  # None until the ack line has been read
        self.capacity = 1
        # the worker pool's pace: how many a forked worker may hold (1 without one)
        self.pace: Pace | None = None
        self._turn_began = 0.0  # loop time the oldest in flight began its run (serial, roughly)
        self.inflight: dict[int, Pending] = {}
        self.dead: asyncio.Future[str] = loop.create_future()
        self.ack: asyncio.Future[dict] = loop.create_future()
        self.init_done: asyncio.Future[dict] = loop.create_future()
        self._log_limit = log_limit
        self._trusted = trusted  # our own launchers emit valid JSON: only the shape is checked
        self.on_worker_exit: Callable[[int, str], None] = lambda pid, detail: None
        self._passthrough = passthrough
        self._next_id = 1
        self._lines = bytearray()
        self._decoder = frames.FrameDecoder()
        self._cancelling: dict[int, asyncio.TimerHandle | None] = {}
        self._writer = FdWriter(loop, requests_fd, lambda: self._die("the process stopped reading its requests"))
        self._logs = [FdReader(loop, fd, self._log_reader(fd == stderr_fd), lambda: None)
                      for fd in (stdout_fd, stderr_fd) if fd >= 0]
        self._results = FdReader(loop, results_fd, self._on_results, self._on_eof)
        if protocol is not None:
            self.ack.set_result({"ok": True, "protocol": protocol})
        if protocol == 2:
            self._read_frames()
        process.exited.add_done_callback(self._on_exit)

    # ------------------------------------------------------------------ public
    @property
    def alive(self) -> bool:
        return not self.dead.done()

    @property
    def serial(self) -> bool:
        """Runs its activations one after another, in the order sent (a v1 process, a forked
        worker): the oldest in flight is the one running, the others wait their turn."""
        return self.capacity != 0

    @property
    def has_room(self) -> bool:
        if not self.alive:
            return False
        if self.pace is not None:
            held = len(self.inflight)
            return held == 0 or (held < self.pace.depth  # never past MAX_DEPTH, the capacity
                                 and self._loop.time() - self._turn_began < JOIN_WITHIN)
        return self.capacity == 0 or len(self.inflight) < self.capacity

    def assume_v1(self) -> None:
        """No ack came within the start grace: the child speaks v1 without one."""
        if not self.ack.done():
            self.protocol = 1
            self.ack.set_result({"ok": True})

    def send(self, kind: int, payload: bytes = b"", ident: int = 0) -> None:
        self._writer.write(frames.HEADER.pack(kind, ident, len(payload)), payload)

    def submit(self, activation: Activation) -> asyncio.Future[ActivationResult]:
        future: asyncio.Future[ActivationResult] = self._loop.create_future()
        if not self.alive:
            future.set_result(errors.command_exited(self.dead.result()))
            return future
        idle = not self.inflight
        if idle:
            self._turn_began = self._loop.time()
        ident = self._take_id()
        self.inflight[ident] = Pending(activation, future)
        try:
            if self.protocol == 2:
                parts = activation.wire_parts()
                self._writer.write(frames.HEADER.pack(frames.RUN, ident, sum(map(len, parts))), *parts, now=idle)
            else:
                self._writer.write(activation.wire_body().replace(b"\n", b"") + b"\n", now=True)
        except OSError:
            self._die("the process stopped reading its requests")
        return future

    def _take_id(self) -> int:
        """Ids are 32-bit on the wire: wrap around, skipping ids still in flight."""
        while True:
            ident = self._next_id
            self._next_id = ident % frames.MAX_ID + 1
            if ident not in self.inflight and ident not in self._cancelling:
                return ident

    def abandon(self, activation: Activation, grace: float) -> bool:
        """Give up on an activation (deadline). True if its process had to be killed."""
        if self.serial:
            self._results.drain()  # a result already written says which one is running now
        ident = next((i for i, p in self.inflight.items() if p.activation is activation), None)
        if ident is None:
            return False
        if self.serial and ident == next(iter(self.inflight)):  # it is the one running
            self._drain_logs()  # its logs so far stay with it
            self._die("killed at its activation's deadline")
            return True
        del self.inflight[ident]
        self.send(frames.CANCEL, b"", ident)
        # a serial process skips it when it gets there, however long the run before it takes
        self._cancelling[ident] = None if self.serial else self._loop.call_later(grace, self._cancel_ignored, ident)
        return False

    def kill(self, reason: str) -> None:
        self._die(reason)

    @property
    def pid(self) -> int:
        return self.process.pid

    def abort(self, message: str) -> None:
        """Kill it and fail its activations with `message` (the memory guard's verdict)."""
        self._die(message, errors.error(502, message))

    # ------------------------------------------------------------------ reading
    def _log_reader(self, is_err: bool) -> Callable[[bytes], None]:
        def on_data(data: bytes) -> None:
            if self.protocol != 2 and len(self.inflight) == 1:
                pending = next(iter(self.inflight.values()))
                pending.activation.logs.add(is_err, data, self._log_limit)
            else:
                self._passthrough(is_err, data)
        return on_data

    def _drain_logs(self) -> None:
        for reader in self._logs:
            reader.drain()

    def _on_results(self, data: bytes) -> None:
        """What fd 3 says before it turns into frames: the ack line, then v1 result lines."""
        try:
            self._on_lines(data)
        except Exception as exc:  # whatever the child sent, a bad stream must not hang anyone
            self._protocol_error(exc)

    def _read_frames(self, already: bytes = b"") -> None:
        """From now on fd 3 carries frames: its reads land where the decoder puts them."""
        self._results.target = self
        if already:
            self._take_frames(lambda: self._decoder.feed(already))

    # the results reader's target once it reads frames (fdio.ReadTarget)
    def buffers(self) -> list[memoryview]:
        return self._decoder.buffers()

    def filled(self, size: int) -> None:
        self._take_frames(lambda: self._decoder.filled(size))

    def _take_frames(self, decode: Callable[[], list[tuple[int, int, bytes | bytearray]]]) -> None:
        try:
            for kind, ident, payload in decode():
                self._on_frame(kind, ident, payload)
        except Exception as exc:  # whatever the child sent, a bad stream must not hang anyone
            self._protocol_error(exc)

    def _protocol_error(self, exc: Exception) -> None:
        """What follows bad bytes is not read as frames or lines: it could settle an
        activation with a result the process never meant."""
        self._results.target = Chunks(lambda data: None)
        self._passthrough(True, f"actionproxy: protocol error from the action: {exc}\n".encode())
        self._die(f"protocol error: {exc}")

    def _on_lines(self, data: bytes) -> None:
        self._lines += data
        while (end := self._lines.find(b"\n")) >= 0:
            line = bytes(self._lines[:end])
            del self._lines[: end + 1]
            if not self.ack.done():
                self._on_ack(line)
                if self.protocol == 2:  # the rest of the stream is frames
                    rest = bytes(self._lines)
                    self._lines.clear()
                    self._read_frames(rest)
                    return
            elif self.inflight:
                self._on_line_result(line)
            else:
                self._passthrough(True, b"actionproxy: unexpected output on fd 3: " + line[:200] + b"\n")

    def _on_ack(self, line: bytes) -> None:
        ack = orjson.loads(line)
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            raise ProtocolError("The action did not initialize properly.")
        self.protocol = 2 if ack.get("protocol") == 2 else 1
        self.ack.set_result(ack)

    def _on_line_result(self, line: bytes) -> None:
        self._drain_logs()
        ident = next(iter(self.inflight))
        settle(self.inflight.pop(ident).future, _check_result(line, validate=True))

    def _on_frame(self, kind: int, ident: int, payload: bytes | bytearray) -> None:
        if kind == frames.STDOUT or kind == frames.STDERR:
            pending = self.inflight.get(ident)
            if pending is None:
                self._passthrough(kind == frames.STDERR, payload)
            else:
                pending.activation.logs.add(kind == frames.STDERR, payload, self._log_limit)
            return
        if kind == frames.WORKER_EXIT:
            self.on_worker_exit(ident, payload.decode("utf-8", "replace"))
            return
        if kind == frames.CHUNK:
            self._on_chunk(ident, payload)
            return
        if kind == frames.TIME:
            if self.pace is not None:
                self.pace.observe(frames.MICROSECONDS.unpack(payload)[0] / 1e6)
            return
        if kind == frames.INIT_DONE:
            reply = orjson.loads(payload)
            if not isinstance(reply, dict):
                raise ProtocolError("INIT_DONE must carry a JSON object")
            if not self.init_done.done():
                self.init_done.set_result(reply)
            return
        if kind not in (frames.DONE, frames.FAILED):
            raise ProtocolError(f"unknown frame kind {kind}")
        timer = self._cancelling.pop(ident, None)
        if timer is not None:
            timer.cancel()
        pending = self.inflight.pop(ident, None)
        if pending is None:
            return
        if self.pace is not None:
            self._turn_began = self._loop.time()  # the next in line starts now
        if kind == frames.DONE:
            result = _check_result(payload, validate=not self._trusted)
            if pending.chunks is not None and payload == STREAM_END:  # else an error ended the stream
                result = ActivationResult(200, b'{"chunks":[' + b",".join(pending.chunks) + b"]}")
        else:
            report = orjson.loads(payload)
            if not isinstance(report, dict):
                raise ProtocolError("FAILED must carry a JSON object")
            result = _failure(report)
        settle(pending.future, result)

    def _on_chunk(self, ident: int, payload: bytes | bytearray) -> None:
        pending = self.inflight.get(ident)
        if pending is None:  # abandoned meanwhile
            return
        if not self._trusted:
            try:
                orjson.loads(payload)
            except orjson.JSONDecodeError:
                raise ProtocolError("a CHUNK must carry one JSON value") from None
        on_chunk = pending.activation.on_chunk
        if on_chunk is not None:
            on_chunk(payload)
        elif pending.chunks is None:
            pending.chunks = [payload]
        else:
            pending.chunks.append(payload)

    def _cancel_ignored(self, ident: int) -> None:
        if self._cancelling.pop(ident, None) is not None:
            self._die("an activation ignored its cancellation past the grace period")

    # ------------------------------------------------------------------ death
    def _on_eof(self) -> None:
        """The result channel closed: the process is ending. Its exit status says more than
        the end-of-file, so wait for it a moment (it is killed if it stays)."""
        if self.process.alive:
            self._loop.call_later(EOF_WAIT, self._die, "the process closed its result channel")
        else:
            self._die(self.process.exited.result())

    def _on_exit(self, exited: asyncio.Future[str]) -> None:
        if self.alive:
            self._results.drain()  # a result written just before exiting still counts
            self._drain_logs()
        self._die(exited.result())

    def _die(self, detail: str, result: ActivationResult | None = None) -> None:
        if self.dead.done():
            return
        self.process.kill()
        for reader in (self._results, *self._logs):
            reader.drain()
            reader.close()
        self._writer.close()
        for timer in self._cancelling.values():
            if timer is not None:
                timer.cancel()
        self._cancelling.clear()
        pending, self.inflight = self.inflight, {}
        for n, item in enumerate(pending.values()):
            queued = self.serial and n > 0  # it never started: the pool runs it elsewhere
            settle(item.future, NOT_STARTED if queued else result or errors.command_exited(detail))
        for future in (self.ack, self.init_done):
            if not future.done():
                future.set_exception(ChannelDied(detail))
                future.exception()  # nobody may be waiting: do not warn about it
        self.dead.set_result(detail)


class ChannelDied(Exception):
    """The process behind a channel ended; the message says how."""


def _check_result(body: bytes | bytearray, validate: bool) -> ActivationResult:
    """Only a JSON object or array is a result. It is passed on as sent; bodies from
    executables (anyone's code) are parsed to be sure, our launchers' are not parsed again."""
    if body[:1].isspace() or body[-1:].isspace():  # strip() would copy a large one regardless
        body = body.strip()
    if body[:1] not in (b"{", b"["):
        return errors.not_a_dict()
    if validate:
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError:
            return errors.not_a_dict()
    return ActivationResult(200, body)


def _failure(report: dict) -> ActivationResult:
    reason = report.get("reason")
    if reason == "exit":
        return errors.error(400, f"{errors.COMMAND_EXITED}: the action asked to exit with code {report.get('code', 0)}")
    if reason == "cancelled":
        return errors.deadline_passed(killed=False)
    return errors.not_a_dict()
