"""Read timeouts: a request's head and its body must each arrive whole within a bound, so that
slow clients (slow-loris) cannot hold connections. Running the request is not bounded here.

aiohttp bounds the size of a head and the idle time of a kept-alive connection, not the time a
request takes to arrive. So each connection's aiohttp protocol is wrapped (`HeadTimer`): the
head clock starts with the first byte that arrives between requests and stops when the app
starts handling the request (`bounded_body`, a middleware), which then starts the body clock.
The body clock bounds the whole body, not the pause between its bytes: an inactivity limit
lets a client that sends a byte now and then hold a connection for as long as the body size
limit allows. Either clock running out answers 408 with a JSON error and closes the connection.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Awaitable, Callable

from aiohttp import web

from actionproxy import errors
from actionproxy.http.plainhttp import wire_answer
from actionproxy.http.openwhisk import respond

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BodyTimeout(asyncio.TimeoutError):
    """Set on a late body: the handler's read raises it. A TimeoutError, so that aiohttp stops
    discarding the unread rest at once and closes the connection."""


class HeadTimer(asyncio.Protocol):
    """One connection's aiohttp protocol, with a clock on each request head."""

    def __init__(self, inner: asyncio.Protocol, seconds: float, answer: bytes) -> None:
        self._inner = inner
        self._seconds = seconds
        self._answer = answer  # the whole 408 response
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._in_request = False
        self._body: web.StreamReader | None = None  # the last request's, while it may still arrive

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)
        if self._timer is None and not self._in_request and (self._body is None or self._body.is_eof()):
            self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        self._inner.connection_lost(exc)

    def request_started(self) -> None:
        self._stop()
        self._in_request = True

    def request_ended(self, body: web.StreamReader) -> None:
        """A body the handler left unread may still be arriving: its bytes start no head clock."""
        self._in_request = False
        self._body = None if body.is_eof() else body

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(self._answer)
            self._transport.close()


def _cut_off(body: web.StreamReader, seconds: float) -> None:
    if not body.is_eof():
        body.set_exception(BodyTimeout(seconds))


def bounded_body(seconds: float) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware: tells the connection's HeadTimer a request is handled, and bounds its body."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        head = transport.get_protocol() if transport is not None else None
        head = head if isinstance(head, HeadTimer) else None
        body = request.content
        if head is not None:
            head.request_started()
        late = None
        if seconds and not body.is_eof():
            late = asyncio.get_running_loop().call_later(seconds, _cut_off, body, seconds)
        try:
            return await handler(request)
        except BodyTimeout:
            response = respond(errors.body_timeout(seconds))
            response.force_close()
            return response
        finally:
            if late is not None:
                late.cancel()
            if head is not None:
                head.request_ended(body)

    return middleware


def timed_protocols(server: Callable[[], asyncio.Protocol], head_seconds: float) -> Callable[[], asyncio.Protocol]:
    """aiohttp's protocol factory, each connection's protocol in a HeadTimer (none for 0 s)."""
    if not head_seconds:
        return server
    answer = wire_answer(errors.head_timeout(head_seconds), close=True)
    return lambda: HeadTimer(server(), head_seconds, answer)


class TimedSockSite(web.BaseSite):
    """A pre-bound listening socket whose connections get a HeadTimer."""

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, head_seconds: float, backlog: int) -> None:
        super().__init__(runner, backlog=backlog)
        self._sock = sock
        self._head_seconds = head_seconds

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            timed_protocols(server, self._head_seconds), sock=self._sock, backlog=self._backlog)
