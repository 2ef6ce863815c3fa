"""The plain requests' server (OpenWhisk mode): the contract's hot path, without aiohttp.

A small HTTP/1.1 server answers the contract's plain requests, `POST /init` and `POST /run`
with a Content-Length body and no Content-Encoding, and the health probes, with the same
functions as the aiohttp routes (contract.py). It costs about a third of what aiohttp's web
layer costs per request, and it needs nothing imported at start but asyncio: the cold start's
short path and the hot path are the same.

Any other request (another path or method, a chunked or encoded body, `Expect`, a body over
the limit, HTTP/1.0, a query string, a head this parser does not read plainly) is not read
here: its connection goes to aiohttp's protocol with whatever was read, and stays there.
aiohttp is imported in a thread after the first `/run` is answered, a second after the start,
on the first request it must take, or on SIGTERM/SIGINT (which the drain then handles); a
connection that needs it meanwhile waits, unread.

The read timeouts hold here as under aiohttp (readtimeouts.py): a request that has not arrived
whole after one read gets a clock, the head's until its head is in, then the body's; either
running out answers 408 and closes. An idle kept-alive connection is closed after
KEEPALIVE_SECONDS, as aiohttp does.
"""

from __future__ import annotations

import asyncio
import http
import re
import signal
import socket
from typing import Callable

from actionproxy import errors
from actionproxy.activation import ActivationResult
from actionproxy.http.contract import HEALTH_PATHS, OpenWhiskContract, health
from actionproxy.runner import ActionRunner

MAX_HEAD = 8190  # aiohttp's limit for a request line and headers
LOAD_AFTER = 1.0  # seconds after the start at which aiohttp loads anyway
MAX_PIPELINED = 1 << 20  # bytes read ahead while a request is answered
BIG_BODY = 1 << 16  # a body from which an answer's head is written beside it, a request's pieces kept apart
KEEPALIVE_SECONDS = 75.0  # an idle kept-alive connection is closed after this (aiohttp's default)
REQUEST_LINE = re.compile(rb"(GET|POST) (/[a-z]*) HTTP/1\.1")
HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
TAKEN = {(b"POST", b"/run"), (b"POST", b"/init"), *((b"GET", path.encode()) for path in HEALTH_PATHS)}


def wire_head(result: ActivationResult, close: bool) -> bytes:
    """The head of an HTTP/1.1 response with a JSON body, for a server that writes its own bytes."""
    phrase = http.HTTPStatus(result.status).phrase.encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (result.status, phrase, len(result.body), b"Connection: close\r\n" if close else b""))


def wire_answer(result: ActivationResult, close: bool) -> bytes:
    return wire_head(result, close) + result.body


class Deferred(Exception):
    """A request this server leaves to aiohttp."""


class PlainServer:
    def __init__(self, runner: ActionRunner, sock: socket.socket, backlog: int) -> None:
        self.runner = runner
        self.contract = OpenWhiskContract(runner)
        config = runner.config
        self.head_late = (config.header_timeout, wire_answer(errors.head_timeout(config.header_timeout), True))
        self.body_late = (config.body_timeout, wire_answer(errors.body_timeout(config.body_timeout), True))
        self._sock = sock
        self._backlog = backlog
        self._server: asyncio.AbstractServer | None = None
        self.connections: set[PlainConnection] = set()
        self.load_aiohttp = asyncio.Event()  # set: time to import aiohttp
        self.signal: signal.Signals | None = None  # a SIGTERM or SIGINT that came before aiohttp
        self.protocol: Callable[[], asyncio.Protocol] | None = None  # aiohttp's, once it is loaded

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: PlainConnection(self), sock=self._sock, backlog=self._backlog)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.call_later(LOAD_AFTER, self.load_aiohttp.set)
        loop.call_later(KEEPALIVE_SECONDS, self._close_idle)
        if not self.runner.starting:  # else the start-up load marks it when it is done
            self.runner.metrics.mark_ready()

    def _on_signal(self, sig: signal.Signals) -> None:
        """New work is refused from now on; the drain itself starts once aiohttp is up."""
        self.signal = sig
        self.runner.drain()
        self.load_aiohttp.set()

    def _close_idle(self) -> None:
        """A sweep rather than a timer per request: the hot path arms nothing."""
        now = asyncio.get_running_loop().time()
        for connection in list(self.connections):
            connection.close_if_idle_since(now - KEEPALIVE_SECONDS)
        asyncio.get_running_loop().call_later(KEEPALIVE_SECONDS / 5, self._close_idle)

    def aiohttp_ready(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        """aiohttp is loaded: the connections waiting for it go to it now, later ones at once."""
        self.protocol = protocol
        for connection in list(self.connections):
            connection.next_request()

    async def close(self, seconds: float) -> None:
        """At shutdown: accept no more, let answers being written finish, close the rest."""
        if self._server is not None:
            self._server.close()
        busy = [connection.busy for connection in self.connections if connection.busy is not None]
        if busy:
            await asyncio.wait(busy, timeout=seconds)
        for connection in list(self.connections):
            connection.close()


class PlainConnection(asyncio.Protocol):
    def __init__(self, owner: PlainServer) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self.busy: asyncio.Task[None] | None = None
        self._deferred = False
        self._late: asyncio.TimerHandle | None = None  # the head's or the body's clock
        self._head_in = False  # the buffered request's head has arrived whole
        self._idle_since = 0.0
        # a large body on its way: its pieces as they arrive, joined once when it is whole
        # (appending them to one growing buffer copied it several times), and its request's head
        self._body: list[bytes] | None = None
        self._body_missing = 0
        self._body_head: tuple[bytes, bytes, dict[bytes, bytes]] = (b"", b"", {})

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._owner.connections.add(self)
        self._idle_since = asyncio.get_running_loop().time()

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connections.discard(self)
        self._transport = None
        self._stop_clock()

    def data_received(self, data: bytes) -> None:
        if self._body is not None:
            data = self._fill_body(data)
        self._buffer += data
        if self.busy is not None and len(self._buffer) > MAX_PIPELINED and self._transport is not None:
            self._transport.pause_reading()  # until this answer is out: a pipelining client waits
        self.next_request()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def close_if_idle_since(self, moment: float) -> None:
        if (self.busy is None and not self._buffer and self._body is None and not self._deferred
                and self._idle_since < moment):
            self.close()

    def next_request(self) -> None:
        """Between requests: answer the next one, or hand the connection to aiohttp."""
        if self._transport is None or self.busy is not None:
            return
        protocol = self._owner.protocol
        if self._deferred:
            if protocol is not None:
                self._hand_over(protocol)
            return
        try:
            request = self._take_request()
        except Deferred:
            self._stop_clock()
            if protocol is not None:
                self._hand_over(protocol)
                return
            self._deferred = True  # unread until aiohttp takes the connection
            self._transport.pause_reading()
            self._owner.load_aiohttp.set()
            return
        if request is None:
            if self._buffer or self._body is not None:
                self._start_clock()
            return
        self._stop_clock()
        self.busy = asyncio.get_running_loop().create_task(self._answer(*request))

    def _take_request(self) -> tuple[bytes, bytes, bytes, bool, dict[bytes, bytes]] | None:
        """(method, path, body, keep-alive, headers) of a whole request taken from the buffer;
        None while it is incomplete; Deferred for a request this server does not take."""
        if self._body is not None:
            return self._take_body()
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                raise Deferred
            return None
        lines = bytes(self._buffer[:end]).split(b"\r\n")
        line = REQUEST_LINE.fullmatch(lines[0])
        if end > MAX_HEAD or line is None or (line[1], line[2]) not in TAKEN:
            raise Deferred
        headers: dict[bytes, bytes] = {}
        for raw in lines[1:]:
            header = HEADER.fullmatch(raw)
            name = header[1].lower() if header else b""
            if header is None or name in headers and name in (b"content-length", b"host"):
                raise Deferred
            headers[name] = header[2]
        if (b"transfer-encoding" in headers or b"expect" in headers or b"upgrade" in headers
                or headers.get(b"content-encoding", b"identity").lower() != b"identity"):
            raise Deferred
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self._owner.runner.config.max_body:
            raise Deferred
        start, stop = end + 4, end + 4 + int(length)
        if len(self._buffer) < stop:
            if not self._head_in:  # the head's clock stops, the body's starts
                self._head_in = True
                self._stop_clock()
            if stop - start >= BIG_BODY:  # from now on its pieces are kept as they come
                self._body, self._body_missing = [bytes(self._buffer[start:])], stop - len(self._buffer)
                self._body_head = (line[1], line[2], headers)
                del self._buffer[:]
            return None
        with memoryview(self._buffer) as view:  # one copy of a big body, not two
            body = bytes(view[start:stop])
        del self._buffer[:stop]
        self._head_in = False
        return line[1], line[2], body, headers.get(b"connection", b"").lower() != b"close", headers

    def _fill_body(self, data: bytes) -> bytes:
        """Keeps what belongs to the large body on its way; returns what comes after it."""
        assert self._body is not None
        taken = min(len(data), self._body_missing)
        self._body.append(data if taken == len(data) else data[:taken])
        self._body_missing -= taken
        return data[taken:]

    def _take_body(self) -> tuple[bytes, bytes, bytes, bool, dict[bytes, bytes]] | None:
        """The request whose large body has now arrived whole, or None while it has not."""
        if self._body is None or self._body_missing:
            return None
        body = b"".join(self._body)
        method, path, headers = self._body_head
        self._body, self._body_head = None, (b"", b"", {})
        self._head_in = False
        return method, path, body, headers.get(b"connection", b"").lower() != b"close", headers

    def _start_clock(self) -> None:
        if self._late is None:
            seconds, answer = self._owner.body_late if self._head_in else self._owner.head_late
            if seconds:
                self._late = asyncio.get_running_loop().call_later(seconds, self._too_late, answer)

    def _stop_clock(self) -> None:
        if self._late is not None:
            self._late.cancel()
            self._late = None

    def _too_late(self, answer: bytes) -> None:
        self._late = None
        if self._transport is not None and self.busy is None:
            self._transport.write(answer)
            self._transport.close()

    async def _answer(self, method: bytes, path: bytes, body: bytes, keep_alive: bool,
                      headers: dict[bytes, bytes]) -> None:
        try:
            result = await self._result(method, path.decode(), body, headers)
        except Exception as exc:  # a bug of ours: answer in the contract's shape, keep serving
            result = errors.error(500, f"Internal error: {exc!r}")
        self.busy = None
        if self._transport is None:  # the client left; the activation still ran
            return
        if len(result.body) < BIG_BODY:
            self._transport.write(wire_answer(result, close=not keep_alive))
        else:  # not copied into one buffer with its head
            self._transport.writelines((wire_head(result, close=not keep_alive), result.body))
        if path == b"/run":
            self._owner.load_aiohttp.set()  # the first result is out: load aiohttp for the rest
        if keep_alive:
            self._transport.resume_reading()
            self._idle_since = asyncio.get_running_loop().time()
            self.next_request()
        else:
            self._transport.close()

    async def _result(self, method: bytes, path: str, body: bytes, headers: dict[bytes, bytes]) -> ActivationResult:
        contract = self._owner.contract
        if method == b"GET":
            return health(self._owner.runner, path)
        if path == "/init":
            return await (contract.init(body) if contract.takes_init_body else contract.refused_init())
        if not contract.takes_run_body:
            return errors.not_initialized()
        traceparent, tracestate = headers.get(b"traceparent"), headers.get(b"tracestate")
        return await contract.run(body, traceparent and traceparent.decode("latin-1"),
                                  tracestate and tracestate.decode("latin-1"))

    def _hand_over(self, protocol_factory: Callable[[], asyncio.Protocol]) -> None:
        assert self._transport is not None
        transport, self._transport = self._transport, None
        self._owner.connections.discard(self)
        protocol = protocol_factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._buffer:
            protocol.data_received(bytes(self._buffer))
        if self._deferred:
            transport.resume_reading()
