"""Blackbox http mode: the proxy starts a web app of its own on $PORT and forwards activations
to it (OpenWhisk: the parameters as JSON; Knative: each request as it came, streamed both ways),
keeping deadlines, metrics, the memory guard, the drain and restarts.

Real proxies; the app is a Python standard-library server started by the proxy.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from conftest import Proxy, wait_until, zip_b64

APP = r'''#!/usr/bin/env python3
import json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def send(self, status, body, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.startswith("/stream"):
            gate = self.path.split("gate=", 1)[1]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"6\r\nfirst\n\r\n")
            self.wfile.flush()
            start = time.time()
            while not os.path.exists(gate) and time.time() - start < 30:
                time.sleep(0.01)
            self.wfile.write(b"5\r\nlast\n\r\n0\r\n\r\n")
            return
        self.send(200, json.dumps({"method": "GET", "path": self.path, "x": self.headers.get("X-Custom")}).encode())

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send(201, json.dumps({"method": "PUT", "path": self.path, "size": len(body)}).encode())

    def do_POST(self):
        params = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if params.get("sleep"):
            time.sleep(params["sleep"])
        if params.get("crash"):
            os._exit(3)
        if params.get("grow"):
            hog = bytearray(params["grow"] * 1024 * 1024)
            hog[::4096] = b"x" * len(hog[::4096])
            time.sleep(5)
        if params.get("text"):
            return self.send(200, b"plain text", "text/plain")
        if params.get("status"):
            return self.send(params["status"], b"nope")
        print("app: activation", self.headers.get("X-OW-Activation-Id"), flush=True)
        self.send(200, json.dumps({"got": params, "path": self.path, "pid": os.getpid(),
                                   "id": self.headers.get("X-OW-Activation-Id"),
                                   "traceparent": self.headers.get("traceparent")}).encode())

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), App).serve_forever()
'''
HTTP_MODE = {"ACTIONPROXY_BLACKBOX_MODE": "http"}


def app_proxy(start_proxy, tmp_path: Path, env: dict[str, str] | None = None) -> Proxy:
    """A blackbox proxy whose pre-installed exec is the app (as an image built FROM ours has)."""
    exe = tmp_path / "app-exec"
    exe.write_text(APP)
    exe.chmod(0o755)
    return start_proxy("blackbox", env={**HTTP_MODE, "ACTIONPROXY_EXEC": str(exe), **(env or {})})


def test_openwhisk_activations_go_to_the_app_as_json(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path, {"ACTIONPROXY_APP_PATH": "/invoke"})
    status, body = proxy.run({"a": 1}, activation_id="act-1")
    assert status == 200 and body["got"] == {"a": 1} and body["path"] == "/invoke" and body["id"] == "act-1"
    assert body["traceparent"].startswith("00-")
    second = proxy.run({"b": 2})[1]
    assert second["pid"] == body["pid"], "one long-lived app"


def test_an_init_with_the_app_in_a_zip_and_the_mode_in_its_env(start_proxy) -> None:
    proxy = start_proxy("blackbox")
    assert proxy.init(zip_b64({"exec": APP}, {"exec": 0o755}), binary=True, env=HTTP_MODE) == (200, {"ok": True})
    assert proxy.run({"z": 1})[1]["got"] == {"z": 1}


def test_answers_that_are_not_results_are_named(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path)
    assert proxy.run({"text": True}) == (502, {"error": "The action did not return a dictionary or array."})
    status, body = proxy.run({"status": 500})
    assert status == 502 and body["error"] == "The app answered 500: nope"


def test_an_app_that_ends_fails_what_it_ran_and_is_started_again(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path)
    first = proxy.run({})[1]["pid"]
    status, body = proxy.run({"crash": True})
    assert status == 400 and "command exited" in body["error"] and "the app" in body["error"]
    status, body = proxy.run({"again": True})
    assert status == 200 and body["pid"] != first


def test_deadlines_cut_a_forward(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path)
    deadline = str(int(time.time() * 1000) + 500)
    status, body = proxy.run({"sleep": 5}, deadline=deadline)
    assert status == 502 and "did not finish by its deadline" in body["error"]
    assert proxy.run({"after": 1})[0] == 200


def test_concurrent_activations(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path)
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda i: proxy.run({"i": i, "sleep": 0.2}, activation_id=f"a{i}"), range(64)))
    assert [(status, body["got"]["i"], body["id"]) for status, body in answers] == \
        [(200, i, f"a{i}") for i in range(64)]


def test_an_app_that_does_not_listen_fails_its_start_with_the_reason(start_proxy, tmp_path: Path) -> None:
    proxy = start_proxy("blackbox", env={"ACTIONPROXY_APP_START_SECONDS": "1"})
    silent = "#!/bin/bash\nsleep 60\n"
    assert proxy.init(zip_b64({"exec": silent}, {"exec": 0o755}), binary=True, env=HTTP_MODE) == \
        (502, {"error": "Cannot start action. Check logs for details."})
    _, err = proxy.streams(settle=0.3)
    assert "did not answer on port" in err and "$PORT" in err, err


def test_the_memory_guard_covers_the_app(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path, {"ACTIONPROXY_MEMORY_LIMIT": str(200 * 1024 * 1024)})
    status, body = proxy.run({"grow": 400})
    assert (status, body) == (502, {"error": "The action exhausted its memory and was aborted."})
    assert proxy.run({"after": 1})[0] == 200


def test_knative_relays_requests_as_they_came(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path, {"__OW_RUNTIME_PLATFORM": "knative"})
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    connection.request("GET", "/a/b?q=1", headers={"X-Custom": "yes"})
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (200, {"method": "GET", "path": "/a/b?q=1", "x": "yes"})
    big = b"x" * (3 << 20)
    connection.request("PUT", "/upload", big, {"Expect": "100-continue", "Content-Type": "application/octet-stream"})
    response = connection.getresponse()
    assert (response.status, json.loads(response.read())) == (201, {"method": "PUT", "path": "/upload", "size": len(big)})
    connection.request("GET", "/healthz")
    assert connection.getresponse().read() == b'{"ok":true}', "the proxy's own routes stay the proxy's"


def test_knative_streams_the_apps_answer(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path, {"__OW_RUNTIME_PLATFORM": "knative"})
    gate = tmp_path / "gate"
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    connection.request("GET", f"/stream?gate={gate}")
    response = connection.getresponse()
    assert response.readline() == b"first\n", "the first part, while the app still waits"
    gate.touch()
    assert response.read() == b"last\n"


def test_the_drain_finishes_the_forward_then_stops_the_app(start_proxy, tmp_path: Path) -> None:
    proxy = app_proxy(start_proxy, tmp_path)
    pid = proxy.run({})[1]["pid"]
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(proxy.run, {"sleep": 1})
        time.sleep(0.3)  # in flight (not a timing assertion: it sleeps 1 s)
        proxy.process.send_signal(signal.SIGTERM)
        assert running.result()[0] == 200
    assert proxy.process.wait(30) == 0
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
               "the app stopped", cap=10)
