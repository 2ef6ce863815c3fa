"""Non-blocking reads and writes on raw file descriptors (pipes and sockets) in the event loop.

We read fds ourselves instead of using asyncio streams so that (1) there is no line-length
limit, and (2) a child's pending output can be drained synchronously the moment its result
arrives, which keeps each activation's logs ahead of its sentinel.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable

CHUNK = 256 * 1024


class FdReader:
    """Calls `on_data(bytes)` for everything read from `fd`, then `on_eof()` once."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fd: int,
        on_data: Callable[[bytes], None],
        on_eof: Callable[[], None],
    ) -> None:
        self._loop = loop
        self.fd = fd
        self._on_data = on_data
        self._on_eof = on_eof
        self._open = True
        self._chunk = bytearray(CHUNK)  # reused: no fresh allocation per read
        self._view = memoryview(self._chunk)
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        self.drain()

    def drain(self) -> None:
        """Read everything available now without blocking (a short read means: all of it)."""
        while self._open:
            try:
                size = os.readv(self.fd, [self._chunk])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                size = 0
            if not size:
                self.close()
                self._on_eof()
                return
            self._on_data(bytes(self._view[:size]))
            if size < CHUNK:
                return

    def close(self) -> None:
        if self._open:
            self._open = False
            self._loop.remove_reader(self.fd)
            os.close(self.fd)


class FdWriter:
    """Writes without blocking the loop; what is written in one loop pass leaves in one write.

    Coalescing matters: each write to a sleeping launcher wakes it, and on a one-CPU container
    that wake-up preempts the proxy. Many requests arriving together cost one wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int,
                 on_error: Callable[[], None] = lambda: None) -> None:
        self._loop = loop
        self.fd = fd
        self._on_error = on_error
        self._pending = bytearray()
        self._sent = 0  # how much of _pending is already written
        self._flush_scheduled = False
        self._waiting_writable = False
        self._close_when_flushed = False
        self._open = True
        os.set_blocking(fd, False)

    def write(self, data: bytes, now: bool = False) -> None:
        """Queue `data` for the end of this loop pass, or send it at once (`now`: the peer is
        idle, so there is nothing to gather it with and waiting only adds latency)."""
        if not self._open:
            raise BrokenPipeError("the channel is closed")
        self._pending += data
        if self._waiting_writable:
            return
        if now and not self._flush_scheduled:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._open or not self._pending:
            return
        try:
            self._sent += os.write(self.fd, memoryview(self._pending)[self._sent:])
        except BlockingIOError:
            pass
        except OSError:
            self.close()
            self._on_error()
            return
        if self._sent == len(self._pending):
            self._pending.clear()
            self._sent = 0
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
