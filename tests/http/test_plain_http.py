"""The plain requests' server (OpenWhisk mode): answers the contract's plain requests before
aiohttp is imported and after, leaves what it does not take to aiohttp, and hands those
connections over without a client noticing.

Which server answered is visible: aiohttp sends a `Server` header, the plain server does not.
Real proxies, real sockets; nothing is timed (a proxy loads aiohttp a second after its start at
the latest, so the tests wait for that by looking, not by the clock).
"""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
import os
from pathlib import Path

from conftest import Proxy, free_port, wait_until

ECHO = "def main(args):\n    return args\n"
SLOW = "import time\ndef main(args):\n    time.sleep(args.get('sleep', 0))\n    return {'slept': args.get('sleep', 0)}\n"


def run(connection: http.client.HTTPConnection, value: object, headers: dict | None = None,
        body: bytes | None = None) -> tuple[int, bytes, str | None]:
    data = body if body is not None else json.dumps({"value": value}).encode()
    connection.request("POST", "/run", data, {"Content-Type": "application/json", **(headers or {})})
    response = connection.getresponse()
    return response.status, response.read(), response.getheader("Server")


def started(tmp_path: Path, code: str, *extra: str) -> tuple[subprocess.Popen, int]:
    """A dedicated proxy (--init), polled from its very start on raw connections."""
    function = tmp_path / "fn.py"
    function.write_text(code)
    port = free_port()
    env = {**os.environ, "ACTIONPROXY_HOST": "127.0.0.1", "ACTIONPROXY_ACTION_DIR": str(tmp_path / "actions")}
    server = subprocess.Popen([sys.executable, "-m", "actionproxy", "serve", "--runtime", "python", "--port",
                               str(port), "--init", str(function), *extra], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: _connects(port), "the proxy listening", cap=30, pause=0.005)
    return server, port


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _health(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/healthz")
    return connection.getresponse().status


def answers(sock: socket.socket, n: int) -> bytes:
    """Read until `n` whole 200 answers with JSON bodies have come."""
    received = b""
    while received.count(b"HTTP/1.1 200 OK") < n or not received.endswith(b"}"):
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return received


def stop(server: subprocess.Popen) -> int:
    server.send_signal(signal.SIGTERM)
    return server.wait(30)


def via_aiohttp(connection: http.client.HTTPConnection, value: object) -> tuple[int, bytes, str | None]:
    """A /run with a query string: a request only aiohttp takes."""
    connection.request("POST", "/run?via=aiohttp", json.dumps({"value": value}), {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read(), response.getheader("Server")


def aiohttp_loaded(port: int) -> bool:
    """True once aiohttp answers (the first request it must take loads it at once)."""
    return via_aiohttp(http.client.HTTPConnection("127.0.0.1", port, timeout=30), {})[2] is not None


def test_plain_requests_stay_on_the_plain_server_after_aiohttp_loads(tmp_path: Path) -> None:
    """Before and after aiohttp is loaded, plain /run requests are the plain server's, on one
    connection; a request only aiohttp takes moves the connection to aiohttp for good."""
    server, port = started(tmp_path, ECHO)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert run(connection, {"n": 0}) == (200, b'{"n":0}', None), "the first answer comes before aiohttp"
        wait_until(lambda: aiohttp_loaded(port), "aiohttp serving", cap=30)
        for n in range(1, 50):
            assert run(connection, {"n": n}) == (200, b'{"n":%d}' % n, None)
        status, body, by = via_aiohttp(connection, {"moved": True})
        assert (status, json.loads(body)) == (200, {"moved": True}) and by is not None and "aiohttp" in by
        status, body, by = run(connection, {"after": True})
        assert (status, json.loads(body)) == (200, {"after": True}) and by is not None, "the connection stays"
    finally:
        assert stop(server) == 0


def test_requests_it_does_not_take_are_answered_by_aiohttp(tmp_path: Path) -> None:
    """As the very first requests: a gzip body, a chunked body, a query string, /metrics, an
    unknown path; each gets aiohttp's answer, in order, on one connection."""
    server, port = started(tmp_path, ECHO)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        status, body, by = run(connection, None, {"Content-Encoding": "gzip"},
                               gzip.compress(b'{"value": {"zipped": 1}}'))
        assert (status, json.loads(body)) == (200, {"zipped": 1}) and by is not None
        connection.request("POST", "/run", iter([b'{"value": ', b'{"chunked": 1}}']),
                           {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
                           encode_chunked=True)
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"chunked": 1})
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200 and b"actionproxy_" in response.read()
        connection.request("POST", "/nowhere", b"{}")
        response = connection.getresponse()
        assert response.status == 404 and "no POST /nowhere" in json.loads(response.read())["error"]
    finally:
        assert stop(server) == 0


def test_early_errors_are_the_contracts_errors(tmp_path: Path) -> None:
    """A bad body answered by the plain server and the same body answered by aiohttp: the same
    status and the same JSON."""
    server, port = started(tmp_path, ECHO)
    try:
        early = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        cases = [b"not json", b"[1]", b'{"value": 5}', b'{"value": {}, "deadline": "soon"}']
        first = [run(early, None, body=case)[:2] for case in cases]
        assert [status for status, _ in first] == [400, 400, 404, 400], first
        wait_until(lambda: aiohttp_loaded(port), "aiohttp serving", cap=30)
        later = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        by_aiohttp = []
        for case in cases:
            later.request("POST", "/run?via=aiohttp", case, {"Content-Type": "application/json"})
            response = later.getresponse()
            by_aiohttp.append((response.status, response.read()))
        assert by_aiohttp == first
    finally:
        assert stop(server) == 0


def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    server, port = started(tmp_path, ECHO)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            requests = b""
            for i in range(3):
                body = json.dumps({"value": {"i": i}}).encode()
                requests += (b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n" % len(body)) + body
            sock.sendall(requests)
            received = answers(sock, 3)
        assert [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["i"]
                for part in received.split(b"HTTP/1.1 200")[1:]] == [0, 1, 2]
    finally:
        assert stop(server) == 0


def test_sigterm_before_aiohttp_drains(tmp_path: Path) -> None:
    """SIGTERM while only the plain server answers: the activation in flight finishes
    and is answered, new work gets 503, and the proxy exits 0."""
    server, port = started(tmp_path, SLOW)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/run", json.dumps({"value": {"sleep": 2}}), {"Content-Type": "application/json"})
    time.sleep(0.3)  # the activation is in flight (not a timing assertion: it sleeps 2 s)
    server.send_signal(signal.SIGTERM)
    wait_until(lambda: _health(port) == 503, "health saying draining")  # the signal is handled asynchronously
    late = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    status, body, _ = run(late, {"sleep": 0})
    assert status == 503 and "shutting down" in json.loads(body)["error"], (status, body)
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"slept": 2})
    assert server.wait(30) == 0, server.stderr.read().decode()
    assert "draining" in server.stderr.read().decode()


def test_the_stem_cell_init_and_run_early(proxy: Proxy) -> None:
    """The conformance suite's usual order on a fresh stem cell, /init then /run."""
    assert proxy.init(ECHO) == (200, {"ok": True})
    assert proxy.run({"a": 1}) == (200, {"a": 1})


def test_deadlines_are_read_against_the_proxys_start_on_both_servers(tmp_path: Path) -> None:
    """A deadline that passed after the proxy started is enforced by aiohttp too: both servers
    read deadlines against the same start (aiohttp's routes once took their own, later, start
    and ignored such a deadline as "from before the proxy started")."""
    server, port = started(tmp_path, ECHO)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert run(connection, {})[2] is None  # the plain server
        passed = json.dumps({"value": {}, "deadline": str(int(time.time() * 1000) + 1)}).encode()
        time.sleep(0.01)  # the deadline is past when the request arrives (it came after the proxy's start)
        late = (502, {"error": "The action did not finish by its deadline and it was cancelled."})
        status, body, _ = run(connection, None, body=passed)
        assert (status, json.loads(body)) == late
        connection.request("POST", "/run?via=aiohttp", passed, {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.getheader("Server") is not None
        assert (response.status, json.loads(response.read())) == late
    finally:
        assert stop(server) == 0


def test_pipelined_big_requests_behind_a_slow_one_are_all_answered(tmp_path: Path) -> None:
    """A client that pipelines megabytes behind a running activation is read only so far ahead
    (the connection pauses), then served in order."""
    server, port = started(tmp_path, SLOW)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            bodies = [json.dumps({"value": {"sleep": 1 if i == 0 else 0, "pad": "x" * (1 << 20)}}).encode()
                      for i in range(8)]
            requests = b"".join(b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                                for body in bodies)
            sock.sendall(requests)
            received = answers(sock, 8)
        assert received.count(b'{"slept":0}') == 7 and received.index(b'{"slept":1}') < received.index(b'{"slept":0}')
    finally:
        assert stop(server) == 0


def test_a_large_body_in_odd_pieces_then_a_pipelined_one(tmp_path: Path) -> None:
    """A large body is read into a buffer of its announced size as it comes: cut at odd places,
    its last piece carrying the head and body of the next request, both come back intact
    (raw UTF-8 included) and in order, on one connection."""
    server, port = started(tmp_path, ECHO)
    try:
        big = json.dumps({"value": {"s": "données 数据 " * 40000}}, ensure_ascii=False).encode()
        small = json.dumps({"value": {"n": 2}}).encode()
        wire = b"".join(b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
                        for body in (big, small))
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for cut in (10, 70, 1000, 65536, 200_001):  # inside the head, then inside the body
                sock.sendall(wire[:cut])
                wire = wire[cut:]
                time.sleep(0.02)
            sock.sendall(wire)
            received = answers(sock, 2)
        first, second = received.split(b"HTTP/1.1 200 OK")[1:]
        assert json.loads(first.split(b"\r\n\r\n", 1)[1]) == json.loads(big)["value"]
        assert json.loads(second.split(b"\r\n\r\n", 1)[1]) == {"n": 2}
    finally:
        assert stop(server) == 0


def test_announced_bodies_reserve_no_memory_before_they_arrive(tmp_path: Path) -> None:
    """A head announcing a body near the limit, with almost nothing of it sent, costs the proxy
    what was sent, not what was announced: ten such uploads stalled at once do not grow it by
    hundreds of megabytes (a small container would be killed for it)."""
    import psutil

    server, port = started(tmp_path, ECHO)
    socks = []
    try:
        wait_until(lambda: _health(port) == 200, "the function loaded", cap=30)
        proxy = psutil.Process(server.pid)
        before = proxy.memory_info().rss
        announced = 80 * 1024 * 1024 - 1024  # just under the default ACTIONPROXY_MAX_BODY
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{\"value\":{\"s\":\"" % announced
                         + b"x" * 100_000)
            socks.append(sock)
        assert _health(port) == 200
        time.sleep(0.5)  # not a timing assertion: room for the loop to read what was sent
        assert proxy.memory_info().rss - before < 64 * 1024 * 1024
    finally:
        for sock in socks:
            sock.close()
        assert stop(server) == 0
