"""Streamed results in Knative mode: a function that yields (a Python generator or async
generator, a Node.js async iterable) answers chunk by chunk, each chunk leaving as the launcher
sends it, the first before the function ends.

The answer is chunked: `text/event-stream` when the request accepts it (each chunk an SSE
`data:` event, an error that ends the stream an `event: error`), else `application/x-ndjson`
(one JSON value per line; an error that ends the stream is its last line, `{"error": ...}`).
A function that does not yield is answered as always. The activation stays in flight until its
stream ends, so deadlines, logs, the memory guard and the drain hold as for any other; a
client that goes away stops it.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from aiohttp import web

from actionproxy.activation import Activation, ActivationResult

SSE = "text/event-stream"
LOOK_EVERY = 1.0  # seconds between looks at the connection while a stream waits for its next chunk
NDJSON = "application/x-ndjson"


class ChunkQueue:
    """The chunks of one activation, from the channel (a callback) to the response (awaited)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._arrived = asyncio.Event()

    def put(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._arrived.set()

    @property
    def pending(self) -> bool:
        return bool(self._chunks)

    def take(self) -> list[bytes]:
        chunks, self._chunks = self._chunks, []
        self._arrived.clear()
        return chunks

    async def wait(self, run: asyncio.Task[ActivationResult], seconds: float | None = None) -> None:
        """Until a chunk arrives, the run ends, or `seconds` pass."""
        if self._chunks or run.done():
            return
        arrived = asyncio.ensure_future(self._arrived.wait())
        try:
            await asyncio.wait((arrived, run), timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            arrived.cancel()


def _framed(chunks: list[bytes], sse: bool) -> bytes:
    if sse:
        return b"".join(b"data: " + chunk + b"\n\n" for chunk in chunks)
    return b"".join(chunk + b"\n" for chunk in chunks)


async def respond_streaming(request: web.Request, activation: Activation,
                            run: Callable[[Activation], Awaitable[ActivationResult]],
                            answer: Callable[[ActivationResult], web.StreamResponse],
                            headers: dict[str, str]) -> web.StreamResponse:
    """Run the activation; answer with `answer(result)` if it does not stream, else stream."""
    queue = ChunkQueue()
    activation.on_chunk = queue.put
    task = asyncio.ensure_future(run(activation))
    await queue.wait(task)
    if task.done() and not queue.pending:
        return answer(task.result())
    sse = SSE in request.headers.get("Accept", "")
    response = web.StreamResponse(headers={**headers, "Content-Type": SSE if sse else NDJSON,
                                           "Cache-Control": "no-cache"})
    try:
        await response.prepare(request)
        while True:
            chunks = queue.take()
            if chunks:
                await response.write(_framed(chunks, sse))
            if task.done() and not queue.pending:
                break
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError("the client left")
            await queue.wait(task, LOOK_EVERY)
        result = task.result()
        if result.status != 200 or result.body != b"{}":  # the stream ended in an error
            await response.write(b"event: error\ndata: " + result.body + b"\n\n" if sse else result.body + b"\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):  # the client left: stop the function
        if activation.abandon is not None:
            activation.abandon()
        await asyncio.gather(task, return_exceptions=True)
    return response
