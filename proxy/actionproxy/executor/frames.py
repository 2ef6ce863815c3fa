"""Protocol v2 framing: a 9-byte header (kind, activation id, payload length) then the payload.

Length-prefixed frames carry payloads of any size and any bytes (no line limit, no
re-encoding), which is what lets one launcher multiplex many activations.
See docs/PROTOCOL.md for the meaning of each kind.
"""

from __future__ import annotations

import struct
HEADER = struct.Struct(">BII")
MICROSECONDS = struct.Struct(">I")  # a TIME frame's payload: how long a run took
MAX_PAYLOAD = 1 << 30
MAX_ID = 0xFFFFFFFF

# proxy -> launcher
INIT = ord("I")
RUN = ord("R")
CANCEL = ord("C")
FORK = ord("F")
# launcher -> proxy
INIT_DONE = ord("K")
DONE = ord("D")
FAILED = ord("X")
STDOUT = ord("O")
STDERR = ord("E")
WORKER_EXIT = ord("W")
CHUNK = ord("S")
TIME = ord("T")


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame stream."""


def encode(kind: int, ident: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, ident, len(payload)) + payload


LARGE = 1 << 16  # a payload this big and not all read yet is read into a buffer of its own
SCRATCH = 1 << 17  # the buffer small frames gather in (more than LARGE plus a header)
RESERVE = 1 << 24  # a large payload's buffer is at most this big before its bytes arrive


class FrameDecoder:
    """Incremental decoder that also chooses where the bytes it reads land.

    Small frames gather in a fixed scratch buffer and leave it as bytes (one copy each). A
    large payload whose bytes are still coming gets a bytearray of its size (of RESERVE at
    first, so that a header alone cannot make the proxy reserve a gigabyte; it grows as the
    bytes arrive); the reads go straight into it, and it is handed on as it is: a megabyte
    result crosses with no copy made here (appending reads to one growing buffer copied it
    several times). A reader asks `buffers()` for where to read, then reports `filled(n)`;
    `feed` does the same for bytes already read.
    """

    def __init__(self) -> None:
        self._scratch = bytearray()  # SCRATCH bytes from the first read, never resized after
        self._view = memoryview(self._scratch)
        self._start = 0  # [_start:_end] of the scratch: read, not yet decoded
        self._end = 0
        self._payload: bytearray | None = None  # a large frame's own buffer, being filled
        self._payload_view = memoryview(b"")
        self._filled = 0
        self._length = 0  # the large frame's payload size, which its buffer grows to
        self._header = (0, 0)  # the large frame's kind and id

    def buffers(self) -> list[memoryview]:
        """Where the next read goes, in order: the rest of a large payload, then the scratch."""
        if not self._scratch:
            self._scratch = bytearray(SCRATCH)
            self._view = memoryview(self._scratch)
        tail = self._view[self._end:]
        if self._payload is None:
            return [tail]
        return [self._payload_view[self._filled:], tail]

    def filled(self, size: int) -> list[tuple[int, int, bytes | bytearray]]:
        """`size` bytes arrived in `buffers()`; every frame now whole, in order. Consumed bytes
        are gone even if the caller fails."""
        found: list[tuple[int, int, bytes | bytearray]] = []
        if self._payload is not None:
            taken = min(size, len(self._payload) - self._filled)
            self._filled += taken
            size -= taken
            self._payload_done(found)
        self._end += size
        self._decode(found)
        return found

    def feed(self, data: bytes) -> list[tuple[int, int, bytes | bytearray]]:
        """The frames completed by bytes read elsewhere."""
        found: list[tuple[int, int, bytes | bytearray]] = []
        with memoryview(data) as rest:
            while rest:
                target = self.buffers()[0]
                size = min(len(target), len(rest))
                target[:size] = rest[:size]
                del target
                rest = rest[size:]
                found += self.filled(size)
        return found

    def _payload_done(self, found: list[tuple[int, int, bytes | bytearray]]) -> None:
        """The large payload's buffer is full: hand it on if that is all of it, else grow it."""
        payload = self._payload
        if payload is None or self._filled < len(payload):
            return
        if self._filled < self._length:  # more is announced than reserved: twice the room
            bigger = bytearray(min(self._length, 2 * len(payload)))
            bigger[:self._filled] = payload
            self._payload, self._payload_view = bigger, memoryview(bigger)
            return
        found.append((*self._header, payload))
        self._payload = None
        self._payload_view = memoryview(b"")

    def _decode(self, found: list[tuple[int, int, bytes | bytearray]]) -> None:
        view, start, end = self._view, self._start, self._end
        while self._payload is None and end - start >= HEADER.size:
            kind, ident, length = HEADER.unpack_from(self._scratch, start)
            if length > MAX_PAYLOAD:
                raise FrameError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD} byte limit")
            body = start + HEADER.size
            if body + length <= end:  # all here: one copy out of the scratch
                found.append((kind, ident, bytes(view[body:body + length])))
                start = body + length
                continue
            if length < LARGE:
                break  # a small frame not all here yet: it fits once moved to the front
            have = end - body  # a large one still coming: its own buffer, what is here first
            self._payload = bytearray(min(length, max(RESERVE, have)))
            self._payload_view = memoryview(self._payload)
            self._payload_view[:have] = view[body:end]
            self._filled, self._length, self._header = have, length, (kind, ident)
            start = end
        if start == end:
            start = end = 0
        elif start:  # a partial header or small frame: to the front, so the tail has room
            self._scratch[:end - start] = self._scratch[start:end]  # same size: no resize
            start, end = 0, end - start
        self._start, self._end = start, end
