"""Knative cold start: time from starting a dedicated function (its action baked in and loaded
at start-up) to the first successful `POST /` answer, in a container and as a host process.

`.venv/bin/python bench/knative.py` builds a throwaway image FROM actionproxy/python (COPY +
ENV OW_AUTOINIT), so `make images` must have run. Containers bind to 127.0.0.1 and are removed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from servers import BENCH, ROOT, free_port

DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
IMAGE = "actionproxy-bench/knative-hello"
ROUNDS = 5
FUNCTION = "def main(args):\n    return {'greeting': 'Hello, ' + args.get('name', 'world')}\n"
DOCKERFILE = """FROM actionproxy/python
COPY hello.py /action/hello.py
ENV __OW_RUNTIME_PLATFORM=knative OW_AUTOINIT=/action/hello.py
"""


def first_answer(port: int, started: float, limit: float = 30.0) -> float:
    """Seconds from `started` to the first 200 from POST / (connection refusals are retried)."""
    body = json.dumps({"name": "Ada"}).encode()
    while time.perf_counter() - started < limit:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200 and json.loads(response.read()) == {"greeting": "Hello, Ada"}:
                    return time.perf_counter() - started
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.005)
    raise RuntimeError(f"no answer on port {port} within {limit} s")


def container_round() -> float:
    port = free_port()
    started = time.perf_counter()
    cid = subprocess.run([DOCKER, "run", "-d", "-p", f"127.0.0.1:{port}:8080", IMAGE],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        return first_answer(port, started)
    finally:
        subprocess.run([DOCKER, "rm", "-f", "-v", cid], capture_output=True)


def host_round(source: Path) -> float:
    port = free_port()
    env = dict(os.environ, __OW_RUNTIME_PLATFORM="knative", OW_AUTOINIT=str(source),
               ACTIONPROXY_HOST="127.0.0.1", ACTIONPROXY_PYTHON=sys.executable)
    started = time.perf_counter()
    proxy = subprocess.Popen([str(Path(sys.executable).parent / "actionproxy"), "serve", "--runtime", "python",
                              "--port", str(port)], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return first_answer(port, started)
    finally:
        proxy.terminate()
        proxy.wait(10)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        context = Path(folder)
        (context / "hello.py").write_text(FUNCTION)
        (context / "Dockerfile").write_text(DOCKERFILE)
        subprocess.run([DOCKER, "build", "-q", "-t", IMAGE, str(context)], check=True, capture_output=True,
                       env=dict(os.environ, DOCKER_BUILDKIT="1"))
        host = [host_round(context / "hello.py") for _ in range(ROUNDS)]
    container = [container_round() for _ in range(ROUNDS)]
    results = {"rounds": ROUNDS,
               "host_start_to_first_result_ms": round(statistics.median(host) * 1000, 1),
               "container_start_to_first_result_ms": round(statistics.median(container) * 1000, 1),
               "host_all_ms": [round(x * 1000, 1) for x in host],
               "container_all_ms": [round(x * 1000, 1) for x in container]}
    out = BENCH / "results" / "knative-latest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"Knative dedicated image, start to first successful POST / (median of {ROUNDS}):")
    print(f"  host process:              {results['host_start_to_first_result_ms']:8.1f} ms")
    print(f"  container (docker run ...): {results['container_start_to_first_result_ms']:8.1f} ms")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
