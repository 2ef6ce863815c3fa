"""The first requests, answered before aiohttp is imported: the cold start's short path.

Importing aiohttp's server costs more than everything else a dedicated function needs before
its first result. So in OpenWhisk mode the proxy first serves the pre-bound socket with this
small HTTP/1.1 server, which takes only the contract's plain requests: `POST /init` and
`POST /run` with a Content-Length body and no Content-Encoding, and the health probes. Their
answers come from the same functions as aiohttp's (contract.py). Any other request (another
path or method, a chunked or encoded body, `Expect`, a body over the limit, HTTP/1.0, a query
string) is not read further: it waits for aiohttp, and makes aiohttp load at once.

aiohttp is imported in a thread after the first `/run` is answered, a second after the start,
on the first request this server leaves to it, or on SIGTERM/SIGINT (which the drain then
handles). Once aiohttp listens on the same socket, this server stops accepting and hands every
connection over to aiohttp's protocol with whatever it had read, between requests.
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
REQUEST_LINE = re.compile(rb"(GET|POST) (/[a-z]*) HTTP/1\.1")
HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*")
TAKEN = {(b"POST", b"/run"), (b"POST", b"/init"), *((b"GET", path.encode()) for path in HEALTH_PATHS)}


def wire_answer(result: ActivationResult, close: bool) -> bytes:
    """A whole HTTP/1.1 response with a JSON body, for a server that writes its own bytes."""
    phrase = http.HTTPStatus(result.status).phrase.encode()
    return (b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
            % (result.status, phrase, len(result.body), b"Connection: close\r\n" if close else b"")) + result.body


class Deferred(Exception):
    """A request this server leaves to aiohttp."""


class FirstRequests:
    def __init__(self, runner: ActionRunner, sock: socket.socket, backlog: int) -> None:
        self.runner = runner
        self.contract = OpenWhiskContract(runner)
        self._sock = sock
        self._backlog = backlog
        self._server: asyncio.AbstractServer | None = None
        self.connections: set[FirstConnection] = set()
        self.load_aiohttp = asyncio.Event()  # set: time to import aiohttp
        self.signal: signal.Signals | None = None  # a SIGTERM or SIGINT that came meanwhile
        self.protocol: Callable[[], asyncio.Protocol] | None = None  # aiohttp's, once it serves

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # a duplicate of the listening socket: closing this server later leaves aiohttp's open
        self._server = await loop.create_server(lambda: FirstConnection(self), sock=self._sock.dup(),
                                                backlog=self._backlog)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.call_later(LOAD_AFTER, self.load_aiohttp.set)
        if not self.runner.starting:  # else the start-up load marks it when it is done
            self.runner.metrics.mark_ready()

    def _on_signal(self, sig: signal.Signals) -> None:
        """New work is refused from now on; the drain itself starts once aiohttp is up."""
        self.signal = sig
        self.runner.drain()
        self.load_aiohttp.set()

    def hand_over(self, protocol: Callable[[], asyncio.Protocol]) -> None:
        """aiohttp serves the socket now: accept no more here, give it every idle connection."""
        assert self._server is not None
        self._server.close()
        self.protocol = protocol
        for connection in list(self.connections):
            connection.next_request()


class FirstConnection(asyncio.Protocol):
    def __init__(self, owner: FirstRequests) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._busy: asyncio.Task[None] | None = None
        self._deferred = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._owner.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connections.discard(self)
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self.next_request()

    def next_request(self) -> None:
        """Between requests: hand over to aiohttp if it serves, else answer the next one."""
        if self._transport is None or self._busy is not None:
            return
        if self._owner.protocol is not None:
            self._hand_over(self._owner.protocol)
            return
        if self._deferred:
            return
        try:
            request = self._take_request()
        except Deferred:
            self._deferred = True  # unread until aiohttp takes the connection
            self._transport.pause_reading()
            self._owner.load_aiohttp.set()
            return
        if request is not None:
            self._busy = asyncio.get_running_loop().create_task(self._answer(*request))

    def _take_request(self) -> tuple[bytes, bytes, bytes, bool] | None:
        """(method, path, body, keep-alive) of a whole request taken from the buffer; None
        while it is incomplete; Deferred for a request this server does not take."""
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
            return None
        body = bytes(self._buffer[start:stop])
        del self._buffer[:stop]
        return line[1], line[2], body, headers.get(b"connection", b"").lower() != b"close"

    async def _answer(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> None:
        try:
            result = await self._result(method, path.decode(), body)
        except Exception as exc:  # a bug of ours: answer in the contract's shape, keep serving
            result = errors.error(500, f"Internal error: {exc!r}")
        self._busy = None
        if self._transport is None:  # the client left; the activation still ran
            return
        self._transport.write(wire_answer(result, close=not keep_alive))
        if path == b"/run":
            self._owner.load_aiohttp.set()  # the first result is out: load the full server now
        if keep_alive:
            self.next_request()
        else:
            self._transport.close()

    async def _result(self, method: bytes, path: str, body: bytes) -> ActivationResult:
        contract = self._owner.contract
        if method == b"GET":
            return health(self._owner.runner, path)
        if path == "/init":
            return await (contract.init(body) if contract.takes_init_body else contract.refused_init())
        return await contract.run(body) if contract.takes_run_body else errors.not_initialized()

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
