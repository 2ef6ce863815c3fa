"""Non-blocking reads and writes on raw file descriptors (pipes and sockets) in the event loop.

We read fds ourselves instead of using asyncio streams so that (1) there is no line-length
limit, and (2) a child's pending output can be drained synchronously the moment its result
arrives, which keeps each activation's logs ahead of its sentinel.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable, Protocol

CHUNK = 256 * 1024
IOV_MAX = os.sysconf("SC_IOV_MAX")  # parts one writev takes


class ReadTarget(Protocol):
    """Where a reader's bytes land: `buffers()` is the memory for the next read, in order;
    `filled(n)` says that n bytes arrived in it."""

    def buffers(self) -> list[memoryview]: ...

    def filled(self, size: int) -> None: ...


class Chunks:
    """The plain target: one reused chunk, each read handed on as bytes. The chunk is made at
    the first read: a reader that turns to frames at once (a forked worker's) never needs it."""

    def __init__(self, on_data: Callable[[bytes], None]) -> None:
        self._on_data = on_data
        self._view = memoryview(b"")
        self._buffers: list[memoryview] = []

    def buffers(self) -> list[memoryview]:
        if not self._buffers:
            self._view = memoryview(bytearray(CHUNK))  # reused: no fresh allocation per read
            self._buffers = [self._view]
        return self._buffers

    def filled(self, size: int) -> None:
        self._on_data(bytes(self._view[:size]))


class FdReader:
    """Reads `fd` into its target (by default: `on_data(bytes)` for each read), then calls
    `on_eof()` once. The target may change between reads (a stream that turns into frames)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        on_data: Callable[[bytes], None],
        on_eof: Callable[[], None],
    ) -> None:
        self._loop = loop
        self.fd = fd
        self.target: ReadTarget = Chunks(on_data)
        self._on_eof = on_eof
        self._open = True
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        self.drain()

    def drain(self) -> None:
        """Read everything available now without blocking (a short read means: all of it)."""
        while self._open:
            buffers = self.target.buffers()
            try:
                size = os.readv(self.fd, buffers)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0
            if not size:
                self.close()
                self._on_eof()
                return
            room = sum(map(len, buffers))
            del buffers
            self.target.filled(size)
            if size < room:
                return

    def close(self) -> None:
        if self._open:
            self._open = False
            self._loop.remove_reader(self.fd)
            os.close(self.fd)


class FdWriter:
    """Writes without blocking the loop; what is written in one loop pass leaves in one write.

    Coalescing matters: each write to a sleeping launcher wakes it, and on a one-CPU container
    that wake-up preempts the proxy. Many requests arriving together cost one wake-up. The
    parts are gathered by writev, not joined: a megabyte payload is not copied on its way.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_error: Callable[[], None] = lambda: None) -> None:
        self._loop = loop
        self.fd = fd
        self._on_error = on_error
        self._pending: list[bytes | memoryview] = []  # the first one may be partly written already
        self._flush_scheduled = False
        self._waiting_writable = False
        self._close_when_flushed = False
        self._open = True
        os.set_blocking(fd, False)

    def write(self, *parts: bytes, now: bool = False) -> None:
        """Queue the parts for the end of this loop pass, or send them at once (`now`: the peer
        is idle, so there is nothing to gather them with and waiting only adds latency)."""
        if not self._open:
            raise BrokenPipeError("the channel is closed")
        self._pending.extend(part for part in parts if part)
        if self._waiting_writable:
            return
        if now and not self._flush_scheduled:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending = self._pending
        while self._open and pending:
            try:
                sent = os.writev(self.fd, pending[:IOV_MAX])
            except BlockingIOError:
                break
            except OSError:
                self.close()
                self._on_error()
                return
            done = 0
            for part in pending:
                if sent < len(part):
                    break
                sent -= len(part)
                done += 1
            del pending[:done]
            if sent:  # the first one left is partly written
                pending[0] = memoryview(pending[0])[sent:]
                break
        if not self._open:
            return
        if not pending:
            if self._waiting_writable:
                self._waiting_writable = False
                self._loop.remove_writer(self.fd)
            if self._close_when_flushed:
                self.close()
        elif not self._waiting_writable:
            self._waiting_writable = True
            self._loop.add_writer(self.fd, self._flush)

    def close_when_flushed(self) -> None:
        """Close once everything written so far is out (the reader then sees end-of-file)."""
        self._close_when_flushed = True
        if not self._pending and not self._flush_scheduled:
            self.close()

    def close(self) -> None:
        if self._open:
            self._open = False
            if self._waiting_writable:
                self._loop.remove_writer(self.fd)
            self._pending.clear()
            os.close(self.fd)
