"""The first-requests server (OpenWhisk mode): answers before aiohttp is imported, leaves what
it does not take to aiohttp, and hands its connections over without a client noticing.

Which server answered is visible: aiohttp sends a `Server` header, the first-requests server
does not. Real proxies, real sockets; nothing is timed (a proxy loads aiohttp a second after
its start at the latest, so the tests wait for that by looking, not by the clock).
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


def stop(server: subprocess.Popen) -> int:
    server.send_signal(signal.SIGTERM)
    return server.wait(30)


def test_early_answers_then_aiohttp_on_the_same_connection(tmp_path: Path) -> None:
    server, port = started(tmp_path, ECHO)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        status, body, by = run(connection, {"n": 0})
        assert (status, json.loads(body), by) == (200, {"n": 0}, None), "the first answer comes before aiohttp"
        seen = {by}
        n = 0
        limit = time.monotonic() + 30
        while by is None:  # the same connection, request after request, until aiohttp answers
            assert time.monotonic() < limit, "aiohttp never took the connection over"
            n += 1
            status, body, by = run(connection, {"n": n})
            assert (status, json.loads(body)) == (200, {"n": n})
            seen.add(by)
        assert by.startswith("Python/") and "aiohttp" in by
        status, body, _ = run(connection, {"after": True})
        assert (status, json.loads(body)) == (200, {"after": True})
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
    """A bad body answered by the first-requests server and the same body answered by aiohttp
    later: the same status and the same JSON."""
    server, port = started(tmp_path, ECHO)
    try:
        early = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        cases = [b"not json", b"[1]", b'{"value": 5}', b'{"value": {}, "deadline": "soon"}']
        first = [run(early, None, body=case)[:2] for case in cases]
        assert [status for status, _ in first] == [400, 400, 404, 400], first
        wait_until(lambda: run(http.client.HTTPConnection("127.0.0.1", port, timeout=30), {})[2] is not None,
                   "aiohttp serving", cap=30)
        later = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        assert [run(later, None, body=case)[:2] for case in cases] == first
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
            received = b""
            while received.count(b"HTTP/1.1 200") < 3 or not received.endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
        assert [json.loads(part.split(b"\r\n\r\n", 1)[1].split(b"HTTP/1.1")[0])["i"]
                for part in received.split(b"HTTP/1.1 200")[1:]] == [0, 1, 2]
    finally:
        assert stop(server) == 0


def test_sigterm_before_aiohttp_drains(tmp_path: Path) -> None:
    """SIGTERM while the first-requests server still answers: the activation in flight finishes
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


def test_deadlines_are_read_against_the_proxys_start_after_the_hand_over(tmp_path: Path) -> None:
    """A deadline that passed after the proxy started is enforced by aiohttp too: both servers
    read deadlines against the same start (aiohttp's routes once took their own, later, start
    and ignored such a deadline as "from before the proxy started")."""
    server, port = started(tmp_path, ECHO)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        _, _, by = run(connection, {})
        assert by is None  # answered before aiohttp
        passed = str(int(time.time() * 1000) + 1)  # after the proxy (and its runner) started
        while by is None:
            _, _, by = run(connection, {})
        status, body, by = run(connection, None, body=json.dumps({"value": {}, "deadline": passed}).encode())
        assert by is not None
        assert (status, json.loads(body)) == (502, {"error": "The action did not finish by its deadline and it was "
                                                             "cancelled."})
    finally:
        assert stop(server) == 0
