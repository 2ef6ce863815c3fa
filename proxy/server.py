"""The HTTP server: app factory, limits, the catch-all, and running on a pre-bound socket."""

from __future__ import annotations

import base64
import socket
import sys
from pathlib import Path

from aiohttp import web

from actionproxy import errors
from actionproxy.archive import is_gzip, is_zip
from actionproxy.activation import ActivationResult
from actionproxy.config import Config
from actionproxy.executor.process import SpawnedProcess
from actionproxy.platform.openwhisk import OpenWhiskPlatform, respond
from actionproxy.runner import ActionRunner

BACKLOG = 1024


def health_routes(runner: ActionRunner) -> list[web.RouteDef]:
    """/healthz: the proxy serves. /readyz: it can take an activation now (initialized or a
    blackbox with its exec, and under the in-flight cap), so a balancer can route elsewhere."""

    async def healthz(_: web.Request) -> web.Response:
        return respond(ActivationResult(200, b'{"ok":true}'))

    async def readyz(_: web.Request) -> web.Response:
        if not runner.ready:
            return respond(ActivationResult(503, b'{"ready":false,"reason":"not initialized"}'))
        if runner.inflight >= runner.config.max_concurrent:
            return respond(ActivationResult(503, b'{"ready":false,"reason":"full"}'))
        return respond(ActivationResult(200, b'{"ready":true}'))

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]


async def not_found(request: web.Request) -> web.Response:
    return respond(errors.error(404, f"There is no {request.method} {request.path} here: use POST /init and POST /run."))


def init_from_file(runner: ActionRunner, path: Path, main: str):
    """Start-up hook: load the action from a file as if it had been POSTed to /init."""

    async def initialize(_: web.Application) -> None:
        data = path.read_bytes()
        binary = is_zip(data) or is_gzip(data)
        code = base64.b64encode(data).decode() if binary else data.decode("utf-8")
        result = await runner.init(code, binary, main, {})
        if result.status != 200:
            print(f"actionproxy: cannot load {path}: {result.body.decode()}", file=sys.stderr)
            raise SystemExit(1)

    return initialize


def build_app(config: Config, stem: SpawnedProcess | None = None,
              socket_path: str | None = None, init_file: Path | None = None,
              main: str = "main") -> web.Application:
    # aiohttp's 1 MiB default body limit would refuse real actions (48 MiB code, base64'd)
    app = web.Application(client_max_size=config.max_body)
    runner = ActionRunner(config, stem, socket_path)
    app.add_routes(OpenWhiskPlatform(runner).routes())
    app.add_routes(health_routes(runner))
    app.router.add_route("*", "/{tail:.*}", not_found)
    if init_file is not None:
        app.on_startup.append(init_from_file(runner, init_file, main))

    async def close_runner(_: web.Application) -> None:
        runner.close()

    app.on_cleanup.append(close_runner)
    return app


def serve(config: Config, sock: socket.socket, stem: SpawnedProcess | None = None,
          socket_path: str | None = None, init_file: Path | None = None, main: str = "main") -> None:
    import uvloop

    # backlog: aiohttp listens again on the socket, with 128 unless told (c=256 would drop SYNs)
    web.run_app(build_app(config, stem, socket_path, init_file, main), sock=sock, print=None,
                access_log=None, backlog=BACKLOG, loop=uvloop.new_event_loop(), handle_signals=True)
