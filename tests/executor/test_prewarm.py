"""The Python stem cell imports the event loop's modules while it waits for /init, except in a
dedicated image on one CPU, where the action comes at once and a `def main` never needs them:
there the import would only take CPU from the proxy's start. Real proxies pinned with taskset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port

SYNC = "import sys\ndef main(args):\n    return {'asyncio': 'asyncio' in sys.modules}\n"
ASYNC = "import sys\nasync def main(args):\n    return {'asyncio': 'asyncio' in sys.modules}\n"


def first_result(tmp_path: Path, cpus: str, code: str, dedicated: bool) -> dict:
    port = free_port()
    env = {**os.environ, "ACTIONPROXY_HOST": "127.0.0.1", "ACTIONPROXY_ACTION_DIR": str(tmp_path / f"a{port}"),
           "ACTIONPROXY_PYTHON": sys.executable}
    function = tmp_path / f"fn{port}.py"
    function.write_text(code)
    command = ["taskset", "-c", cpus, sys.executable, "-m", "actionproxy", "serve", "--runtime", "python",
               "--port", str(port)] + (["--init", str(function)] if dedicated else [])
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def post(path: str, body: dict) -> dict | None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", json.dumps(body).encode(),
                                             {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return json.loads(response.read())
            except (urllib.error.URLError, ConnectionError):
                return None

        limit = time.monotonic() + 30
        initialized = dedicated
        while True:
            assert server.poll() is None and time.monotonic() < limit, server.stderr.read().decode()
            if not initialized:
                initialized = post("/init", {"value": {"code": code}}) is not None
            answer = post("/run", {"value": {}}) if initialized else None
            if answer is not None:
                return answer
            time.sleep(0.05)
    finally:
        server.terminate()
        server.wait(30)


@pytest.mark.parametrize("code, asyncio_loaded", [(SYNC, False), (ASYNC, True)], ids=["def-main", "async-def-main"])
def test_a_dedicated_image_on_one_cpu_imports_asyncio_only_for_an_async_action(
        tmp_path: Path, code: str, asyncio_loaded: bool) -> None:
    assert first_result(tmp_path, "0", code, dedicated=True) == {"asyncio": asyncio_loaded}


def test_a_stem_cell_prewarms_the_event_loop(tmp_path: Path) -> None:
    """Waiting for /init, the stem cell imported asyncio already (a forked def main inherits it)."""
    assert first_result(tmp_path, "0", SYNC, dedicated=False) == {"asyncio": True}
