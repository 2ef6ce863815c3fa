"""Slow clients cannot hold connections: the request head and body have read timeouts.

Real proxies with short timeouts (ACTIONPROXY_HEADER_TIMEOUT=1, ACTIONPROXY_BODY_TIMEOUT=2)
driven over raw sockets: a head or body that trickles in is answered 408 and the connection
closed, hundreds of such connections included; what runs after the request has arrived (a long
activation) and an idle keep-alive connection are not touched. Each holds on both servers of
OpenWhisk mode: the plain requests' server and aiohttp (which takes a request with a query).
Nothing is timed: a connection that stays open fails the test when the cap of the wait is
reached.
"""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

from conftest import Proxy

TIMEOUTS = {"ACTIONPROXY_HEADER_TIMEOUT": "1", "ACTIONPROXY_BODY_TIMEOUT": "2"}
CAP = 20  # seconds a test waits for the server to close a connection: far past either timeout
HEAD_TIMEOUT = ("The request head did not arrive whole within 1 s (ACTIONPROXY_HEADER_TIMEOUT); "
                "the connection is closed.")
BODY_TIMEOUT = ("The request body did not arrive whole within 2 s (ACTIONPROXY_BODY_TIMEOUT); "
                "the connection is closed.")
ECHO = "def main(args):\n    return args\n"
SLEEPY = "import time\ndef main(args):\n    time.sleep(args['seconds'])\n    return {'slept': args['seconds']}\n"
PARTIAL_HEAD = b"POST /run HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


PATHS = {"plain": b"/run", "aiohttp": b"/run?via=aiohttp"}


def request(body: dict, path: bytes = b"/run") -> bytes:
    data = json.dumps(body).encode()
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (path, len(data))) + data


def connect(proxy: Proxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=CAP)


def read_response(sock: socket.socket) -> tuple[int, dict]:
    """One whole response (Content-Length framed) from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), json.loads(body)


def trickle_until_closed(socks: list[socket.socket], pause: float) -> dict[socket.socket, bytes]:
    """Send each open socket one more byte every `pause` s until the server closes them all;
    returns what each received before its end. Fails after CAP seconds."""
    received = {sock: b"" for sock in socks}
    open_socks = set(socks)
    limit = time.monotonic() + CAP
    while open_socks:
        assert time.monotonic() < limit, f"{len(open_socks)} of {len(socks)} slow connections still open after {CAP} s"
        readable, _, _ = select.select(list(open_socks), [], [], pause)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            received[sock] += data
            if not data:
                open_socks.discard(sock)
        for sock in open_socks - set(readable):
            try:
                sock.send(b"x")
            except (BrokenPipeError, ConnectionResetError):
                open_socks.discard(sock)
    return received


def timeout_answer(raw: bytes) -> tuple[int, dict]:
    head, body = raw.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


@pytest.fixture
def slow_proxy(start_proxy) -> Proxy:
    proxy = start_proxy("python", env=TIMEOUTS)
    assert proxy.init(ECHO) == (200, {"ok": True})
    return proxy


@pytest.mark.parametrize("earlier", [None, "plain", "aiohttp"],
                         ids=["first-request", "after-a-plain-request", "after-an-aiohttp-request"])
def test_a_slow_loris_head_is_answered_408_and_closed(slow_proxy: Proxy, earlier: str | None) -> None:
    """A head sent a byte at a time is cut off at the head timeout, also as the second request of a
    kept-alive connection, on either server; the proxy serves on."""
    with connect(slow_proxy) as sock:
        if earlier is not None:
            sock.sendall(request({"value": {"i": 0}}, PATHS[earlier]))
            assert read_response(sock) == (200, {"i": 0})
        sock.sendall(PARTIAL_HEAD)
        received = trickle_until_closed([sock], pause=0.3)[sock]
    assert timeout_answer(received) == (408, {"error": HEAD_TIMEOUT})
    assert slow_proxy.run({"after": True}) == (200, {"after": True})


def test_two_hundred_slow_loris_connections_are_all_closed(slow_proxy: Proxy) -> None:
    """Hundreds of trickling heads are all closed, and good requests are answered meanwhile."""
    socks = [connect(slow_proxy) for _ in range(200)]
    try:
        for sock in socks:
            sock.sendall(PARTIAL_HEAD)
        assert slow_proxy.run({"during": True}) == (200, {"during": True})
        trickle_until_closed(socks, pause=0.5)
    finally:
        for sock in socks:
            sock.close()
    assert slow_proxy.run({"after": True}) == (200, {"after": True})


@pytest.mark.parametrize("server", PATHS)
def test_a_slow_body_is_answered_408_and_closed(slow_proxy: Proxy, server: str) -> None:
    """A body that keeps coming, a byte at a time well inside any inactivity limit, is still cut off
    at the body timeout: the bound is on the whole body."""
    with connect(slow_proxy) as sock:
        sock.sendall(b"POST " + PATHS[server] + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000\r\n\r\n{\"value\": {\"pad\": \"")
        received = trickle_until_closed([sock], pause=0.2)[sock]
    assert timeout_answer(received) == (408, {"error": BODY_TIMEOUT})
    assert slow_proxy.run({"after": True}) == (200, {"after": True})


def test_an_activation_longer_than_the_timeouts_gets_its_answer(start_proxy) -> None:
    """The timeouts cover reading the request, not running it: a 4 s activation (twice the longest
    timeout) answers on its connection."""
    proxy = start_proxy("python", env=TIMEOUTS)
    assert proxy.init(SLEEPY) == (200, {"ok": True})
    with connect(proxy) as sock:
        sock.sendall(request({"value": {"seconds": 4}}))
        assert read_response(sock) == (200, {"slept": 4})


@pytest.mark.parametrize("server", PATHS)
def test_an_idle_kept_alive_connection_is_not_cut_by_the_head_timeout(slow_proxy: Proxy, server: str) -> None:
    """Between requests a kept-alive connection is idle, not slow: after a pause longer than the head
    timeout the next request on the same connection is answered."""
    with connect(slow_proxy) as sock:
        sock.sendall(request({"value": {"n": 1}}, PATHS[server]))
        assert read_response(sock) == (200, {"n": 1})
        time.sleep(2.5)
        sock.sendall(request({"value": {"n": 2}}, PATHS[server]))
        assert read_response(sock) == (200, {"n": 2})
