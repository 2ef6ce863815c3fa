"""Test harness: real `actionproxy serve` processes on real ports, driven over real HTTP.

Modelled on OpenWhisk's ActionContainer harness (spec f.1): a proxy per test, its stdout and
stderr captured to files, init/run helpers that build the suite's payloads, and a stream
check that counts sentinels.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zip_b64(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> str:
    """A base64 zip of {name: content}; `modes` sets unix permissions per name."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            archive.writestr(info, content)
    return base64.b64encode(buf.getvalue()).decode()


class Proxy:
    """One running proxy process and the client calls the OpenWhisk suite makes."""

    def __init__(self, tmp: Path, runtime: str = "python", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.out_path = tmp / f"proxy-{self.port}.out"
        self.err_path = tmp / f"proxy-{self.port}.err"
        full_env = dict(os.environ)
        full_env.pop("OW_WAIT_FOR_ACK", None)
        full_env["ACTIONPROXY_HOST"] = "127.0.0.1"
        full_env["ACTIONPROXY_ACTION_DIR"] = str(tmp / f"actions-{self.port}")
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "actionproxy", "serve", "--runtime", runtime, "--port", str(self.port)],
            stdout=open(self.out_path, "wb"), stderr=open(self.err_path, "wb"), env=full_env, cwd=tmp)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.err_path.read_text()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("proxy did not start listening within 20 s")

    # ---------------------------------------------------------------- HTTP
    def post(self, path: str, body: bytes | dict | list, timeout: float = 60,
             headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        """POST; returns (status, parsed JSON body or None, raw body)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw, hdrs = response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            status, raw, hdrs = err.code, err.read(), err.headers
        assert hdrs.get("Content-Length") == str(len(raw)), "every response carries Content-Length"
        assert "chunked" not in (hdrs.get("Transfer-Encoding") or "")
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return status, parsed, raw

    def init(self, code: str | None, main: str = "main", env: dict | None = None,
             binary: bool = False) -> tuple[int, Any]:
        status, parsed, _ = self.post(
            "/init", {"value": {"code": code, "main": main, "binary": binary, "env": env}})
        return status, parsed

    def run(self, value: Any = None, timeout: float = 60, **other: Any) -> tuple[int, Any]:
        payload = {"value": {} if value is None else value, **other}
        status, parsed, _ = self.post("/run", payload, timeout=timeout)
        return status, parsed

    # ---------------------------------------------------------------- streams
    def streams(self, settle: float = 0.1) -> tuple[str, str]:
        time.sleep(settle)
        return (self.out_path.read_text(errors="replace"), self.err_path.read_text(errors="replace"))

    def check_streams(self, sentinels: int = 1, concurrent: bool = False) -> tuple[str, str]:
        """Like the OpenWhisk harness: count sentinels per stream, return the rest trimmed."""
        out, err = self.streams()
        assert out.count(SENTINEL) == sentinels, out
        assert err.count(SENTINEL) == sentinels, err
        if concurrent:
            assert (SENTINEL + "\n") * sentinels in out
        return out.replace(SENTINEL, "").strip(), err.replace(SENTINEL, "").strip()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator:
    """Factory: start_proxy(env={...}) -> Proxy; every proxy is stopped after the test."""
    started: list[Proxy] = []

    def start(runtime: str = "python", env: dict[str, str] | None = None) -> Proxy:
        proxy = Proxy(tmp_path, runtime, env)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(start_proxy) -> Proxy:
    return start_proxy()
