"""Log framing: each activation's output leaves the proxy as one block, never interleaved.

Two formats: `sentinel` (OpenWhisk: the block's lines, then the sentinel line, on stdout and
on stderr) and `json` (one JSON object per line with the activation id, for log stores that
read container logs out of band, such as Knative's).
"""

from __future__ import annotations

import asyncio
import os
import time

import orjson

from actionproxy.tracecontext import Trace

SENTINEL = b"XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n"


class ActivationLogs:
    """What one activation wrote, kept until it ends, capped at `limit` bytes."""

    __slots__ = ("out", "err", "size", "truncated")

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, is_err: bool, data: bytes, limit: int) -> None:
        if self.size + len(data) > limit:
            data = data[: max(0, limit - self.size)]
            self.truncated = True
        if data:
            (self.err if is_err else self.out).append(data)
            self.size += len(data)


def _block(chunks: list[bytes]) -> bytes:
    data = b"".join(chunks)
    if data and not data.endswith(b"\n"):
        data += b"\n"
    return data


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            time.sleep(0.001)


class LogWriter:
    """Writes finished activations' logs to the container's stdout/stderr.

    Blocks finished in the same event-loop pass leave in one write per stream (each block
    stays whole and in order); outside a running loop they are written at once.
    """

    def __init__(self, fmt: str, limit: int, stdout: int = 1, stderr: int = 2) -> None:
        if fmt not in ("sentinel", "json"):
            raise ValueError(f"unknown log format {fmt!r} (use 'sentinel' or 'json')")
        self.fmt = fmt
        self.limit = limit
        self._stdout = stdout
        self._stderr = stderr
        self._pending: dict[int, list[bytes]] = {stdout: [], stderr: []}
        self._flush_scheduled = False

    def _emit(self, fd: int, data: bytes) -> None:
        self._pending[fd].append(data)
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        for fd, chunks in self._pending.items():
            if chunks:
                data = b"".join(chunks)
                chunks.clear()
                _write(fd, data)

    def activation(self, logs: ActivationLogs, activation_id: str, trace: Trace | None = None) -> None:
        if logs.truncated:
            logs.err.append(
                f"\nLogs were truncated because the total bytes size exceeds the limit of "
                f"{self.limit} bytes.\n".encode())
        if self.fmt == "sentinel":
            self._emit(self._stdout, _block(logs.out) + SENTINEL)
            self._emit(self._stderr, _block(logs.err) + SENTINEL)
        else:
            self._json_lines(logs.out, "stdout", activation_id, trace)
            self._json_lines(logs.err, "stderr", activation_id, trace)

    def _json_lines(self, chunks: list[bytes], stream: str, activation_id: str, trace: Trace | None = None) -> None:
        data = b"".join(chunks)
        if not data:
            return
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"
        lines = data.decode("utf-8", "replace").splitlines()
        ids = {} if trace is None else {"traceId": trace.trace_id, "spanId": trace.span_id}
        self._emit(self._stdout, b"".join(
            orjson.dumps({"time": now, "stream": stream, "activationId": activation_id, **ids,
                          "message": line}) + b"\n"
            for line in lines))

    def raw(self, is_err: bool, data: bytes) -> None:
        """Output that belongs to no activation, kept in order with the blocks around it."""
        self._emit(self._stderr if is_err else self._stdout, data)

    def proxy_error(self, message: str, sentinels: bool) -> None:
        """A message of the proxy's own on stderr (init failures, refused re-init)."""
        if self.fmt == "json":
            self._json_lines([message.encode()], "stderr", "")
            return
        if message:
            self._emit(self._stderr, message.rstrip("\n").encode() + b"\n")
        if sentinels:
            self._emit(self._stdout, SENTINEL)
            self._emit(self._stderr, SENTINEL)
