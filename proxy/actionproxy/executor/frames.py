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


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, get whole frames back."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        """Every whole frame now available; consumed bytes are gone even if the caller fails."""
        buf = self._buf
        buf += data
        found: list[tuple[int, int, bytes]] = []
        start = 0
        size = len(buf)
        too_big = 0
        with memoryview(buf) as view:  # one copy of each payload (a bytearray slice is another)
            while size - start >= HEADER.size:
                kind, ident, length = HEADER.unpack_from(buf, start)
                end = start + HEADER.size + length
                if length > MAX_PAYLOAD:
                    too_big = length
                    break
                if end > size:
                    break
                found.append((kind, ident, bytes(view[start + HEADER.size : end])))
                start = end
        del buf[:start]
        if too_big:
            raise FrameError(f"frame of {too_big} bytes exceeds the {MAX_PAYLOAD} byte limit")
        return found
