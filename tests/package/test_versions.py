"""The images of every language version (`make images`): actionproxy/python:3.11, 3.13, 3.14 and
actionproxy/nodejs:20, 24. The full suite runs on the default images (python:latest = 3.11,
nodejs:latest = 20); each other version runs this subset in a real container: a function
loaded by /init reports its interpreter's version, and a feature that depends on it works
(Python: a `def main` generator in a forked worker, joined; an `async def main`; Node.js: an
ES module, and TypeScript through the esbuild the image carries). Without docker or the images: skipped, except on CI (CI=true), where it fails.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from conftest import CONTAINER_LABEL, docker, require_docker, wait_until

# (image tag, what the interpreter reports: a prefix of sys.version or process.version)
VERSIONS = [
    ("actionproxy/python:3.11", ("3.11.",)),
    ("actionproxy/python:3.13", ("3.13.",)),
    ("actionproxy/python:3.14", ("3.14.",)),
    ("actionproxy/nodejs:20", ("v20.", "v18.")),  # v18: the stand-in built from Debian bookworm
    ("actionproxy/nodejs:24", ("v24.",)),
]
PY_GENERATOR = ("import sys\n"
                "def main(args):\n"
                "    yield {'version': sys.version.split()[0]}\n"
                "    yield {'n': args.get('n')}\n")
PY_ASYNC = ("import asyncio, sys\n"
            "async def main(args):\n"
            "    await asyncio.sleep(0)\n"
            "    return {'version': sys.version.split()[0], 'n': args.get('n')}\n")
TYPESCRIPT = ("interface Args { n: number }\n"
              "export function main(args: Args): { version: string; n: number } {\n"
              "  return { version: process.version, n: args.n * 2 };\n"
              "}\n")
NODE_MODULE = ("import { setTimeout as sleep } from 'node:timers/promises';\n"
               "export default async function (args) {\n"
               "  await sleep(1);\n"
               "  return {version: process.version, n: args.n};\n"
               "}\n")


def post(port: int, path: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def started(tag: str) -> tuple[str, int]:
    require_docker(tags=(tag,))
    container = docker("run", "-d", "--rm", "--label", CONTAINER_LABEL, "--name", f"version-{uuid.uuid4().hex[:10]}",
                       "-p", "127.0.0.1::8080", tag).stdout.strip()
    port = int(docker("port", container, "8080/tcp").stdout.split()[0].rpartition(":")[2])

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(healthy, f"{tag} serving", cap=60)
    return container, port


def run_once(tag: str, code: str, value: dict) -> tuple[int, Any]:
    container, port = started(tag)
    try:
        assert post(port, "/init", {"value": {"code": code, "main": "main"}}) == (200, {"ok": True})
        return post(port, "/run", {"value": value, "activation_id": "v1"})
    finally:
        docker("rm", "-f", container, check=False)


@pytest.mark.parametrize(("tag", "prefixes"), VERSIONS, ids=[tag.split("/")[1] for tag, _ in VERSIONS])
def test_each_version_runs_a_function_of_its_own(tag: str, prefixes: tuple[str, ...]) -> None:
    if "python" in tag:
        status, body = run_once(tag, PY_GENERATOR, {"n": 1})
        assert status == 200 and body["chunks"][1] == {"n": 1}, body
        version = body["chunks"][0]["version"] + "."
        assert run_once(tag, PY_ASYNC, {"n": 2})[1]["n"] == 2
    else:
        status, body = run_once(tag, NODE_MODULE, {"n": 3})
        assert status == 200 and body["n"] == 3, body
        version = body["version"]
        assert run_once(tag, TYPESCRIPT, {"n": 4}) == (200, {"version": version, "n": 8})
    assert version.startswith(prefixes), (tag, version)
