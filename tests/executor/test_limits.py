"""Limits that protect the container: memory, body size, admission, health and readiness."""

from __future__ import annotations

import concurrent.futures
import json
import threading
import urllib.request

from conftest import Proxy, zip_b64

TARGETS = ("host", "container")  # every test runs against a host proxy and the runtime image

EXHAUSTED = "The action exhausted its memory and was aborted."

HOG = """
import asyncio, time
{kw}def main(args):
    if args.get("hog"):
        blob = bytearray(400 * 1024 * 1024)
        {sleep}(10)
        return {{"len": len(blob)}}
    return {{"ok": True}}
"""


def _hog(mode: str) -> str:
    if mode == "async":
        return HOG.format(kw="async ", sleep="await asyncio.sleep")
    return HOG.format(kw="", sleep="time.sleep")


def test_memory_limit_kills_the_hog_and_recovers_async(start_proxy) -> None:
    """Over ACTIONPROXY_MEMORY_LIMIT the launcher is killed with OpenWhisk's OOM message."""
    proxy = start_proxy(env={"ACTIONPROXY_MEMORY_LIMIT": str(200 * 1024 * 1024)})
    assert proxy.init(_hog("async"))[0] == 200
    assert proxy.run({"hog": True}) == (502, {"error": EXHAUSTED})
    assert proxy.run({}) == (200, {"ok": True})
    _, err = proxy.streams()
    assert "over the limit" in err


def test_memory_limit_kills_only_the_hogging_worker_sync(start_proxy, tmp_path) -> None:
    """Sync: only the worker over the limit dies; an activation on another worker finishes."""
    proxy = start_proxy(env={"ACTIONPROXY_MEMORY_LIMIT": str(200 * 1024 * 1024)})
    code = _hog("sync").replace('return {"ok": True}', 'time.sleep(args.get("nap", 0))\n    return {"ok": True}')
    assert proxy.init(code)[0] == 200
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        bystander = pool.submit(proxy.run, {"nap": 3})
        assert proxy.run({"hog": True}) == (502, {"error": EXHAUSTED})
        assert bystander.result() == (200, {"ok": True})
    assert proxy.run({}) == (200, {"ok": True})


def test_memory_limit_applies_to_the_nodejs_launcher(start_proxy) -> None:
    """Node.js: a launcher over the limit is killed, reported, and restarted for the next run."""
    proxy = start_proxy("nodejs", env={"ACTIONPROXY_MEMORY_LIMIT": str(200 * 1024 * 1024)})
    code = ("async function main(args) {\n"
            "  if (args.hog) {\n"
            "    const blob = Buffer.alloc(400 * 1024 * 1024, 1);\n"
            "    await new Promise(r => setTimeout(r, 10000));\n"
            "    return {len: blob.length};\n"
            "  }\n"
            "  return {ok: true};\n"
            "}\n")
    assert proxy.init(code)[0] == 200
    assert proxy.run({"hog": True}) == (502, {"error": EXHAUSTED})
    assert proxy.run({}) == (200, {"ok": True})


def test_memory_limit_applies_to_blackbox_exec(start_proxy) -> None:
    """A one-shot exec that grows past the limit is killed and reported the same way."""
    proxy = start_proxy("blackbox", env={"ACTIONPROXY_MEMORY_LIMIT": str(100 * 1024 * 1024)})
    script = ("#!/bin/sh\n"
              "exec python3 -c \"import time; b = bytearray(300*1024*1024); time.sleep(10); print('{}')\"\n")
    assert proxy.init(script)[0] == 200
    assert proxy.run({}) == (502, {"error": EXHAUSTED})


def test_body_over_the_limit_is_a_json_413_naming_it(start_proxy) -> None:
    """Bodies past ACTIONPROXY_MAX_BODY get 413 with the limit in the message; serving goes on."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_BODY": "4096"})
    big = json.dumps({"value": {"code": "x" * 10000}}).encode()
    status, body, _ = proxy.post("/init", big)
    assert status == 413 and "4096" in body["error"]
    assert proxy.init("def main(a):\n    return a\n")[0] == 200
    status, body, _ = proxy.post("/run", big)
    assert status == 413 and "4096" in body["error"]
    assert proxy.run({"k": 1}) == (200, {"k": 1})


def test_empty_and_wrong_method_requests_get_json_errors(proxy: Proxy) -> None:
    """Empty bodies, unknown routes and methods: JSON errors, the container keeps serving."""
    assert proxy.post("/init", b"")[0] == 403
    assert proxy.init("def main(a):\n    return a\n")[0] == 200
    status, body, _ = proxy.post("/run", b"")
    assert status == 400 and "error" in body
    request = urllib.request.Request(proxy.base + "/run", method="GET")
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("GET /run must not succeed")
    except urllib.error.HTTPError as err:
        assert err.code == 404 and "error" in json.loads(err.read())
    assert proxy.run({"k": 2}) == (200, {"k": 2})


def _get(proxy: Proxy, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(proxy.base + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_health_and_readiness_report_initialized_and_full(start_proxy, tmp_path) -> None:
    """/healthz is 200 while the proxy takes work (/init, before any action) and 503 "full" at
    the in-flight cap; /readyz is 503 before init, 200 after, 503 "full" at the cap."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_CONCURRENT": "2"})
    assert _get(proxy, "/healthz") == (200, {"ok": True})
    assert _get(proxy, "/readyz") == (503, {"ready": False, "reason": "not initialized"})
    gate = tmp_path / "gate"
    code = ("import asyncio, os\n"
            "async def main(args):\n"
            "    while not os.path.exists(args['gate']):\n"
            "        await asyncio.sleep(0.01)\n"
            "    return {}\n")
    assert proxy.init(code)[0] == 200
    assert _get(proxy, "/readyz") == (200, {"ready": True})
    threads = [threading.Thread(target=proxy.run, args=({"gate": str(gate)},)) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        status, body = _get(proxy, "/readyz")
        for _ in range(500):
            if status == 503:
                break
            status, body = _get(proxy, "/readyz")
        assert (status, body) == (503, {"ready": False, "reason": "full"})
        assert _get(proxy, "/healthz") == (503, {"ok": False, "reason": "full"})
    finally:
        gate.touch()
        for thread in threads:
            thread.join(30)
    assert _get(proxy, "/readyz") == (200, {"ready": True})
    assert _get(proxy, "/healthz") == (200, {"ok": True})


def test_blackbox_is_ready_without_init(start_proxy) -> None:
    """A blackbox container can run its pre-installed exec (or stub) before any /init."""
    proxy = start_proxy("blackbox")
    assert _get(proxy, "/readyz") == (200, {"ready": True})


def test_crash_is_reported_in_the_log(proxy: Proxy) -> None:
    """A process that crashes is named in the log with how it ended, and is replaced."""
    code = "import os, signal\ndef main(a):\n    if a.get('die'):\n        os.kill(os.getpid(), signal.SIGKILL)\n    return {}\n"
    assert proxy.init(code)[0] == 200
    status, body = proxy.run({"die": True})
    assert status == 400 and "SIGKILL" in body["error"]
    assert proxy.run({}) == (200, {})
    _, err = proxy.streams()
    assert "killed by signal SIGKILL" in err and "replaced from the saved init" in err


def test_invalid_zip_is_a_clear_init_error(proxy: Proxy) -> None:
    """A body that claims to be a zip but is not one fails the init, not the container."""
    broken = zip_b64({"__main__.py": "def main(a):\n    return a\n"})
    truncated = broken[: len(broken) // 2]
    truncated += "=" * (-len(truncated) % 4)
    status, body = proxy.init(truncated, binary=True)
    assert status == 502 and "error" in body
    assert proxy.init("def main(a):\n    return a\n")[0] == 200
