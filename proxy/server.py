"""The HTTP server: app factory, limits, the catch-all, and running on a pre-bound socket."""

from __future__ import annotations

import socket

from aiohttp import web

from actionproxy import errors
from actionproxy.config import Config
from actionproxy.executor.process import SpawnedProcess
from actionproxy.platform.openwhisk import OpenWhiskPlatform, respond
from actionproxy.runner import ActionRunner


async def not_found(request: web.Request) -> web.Response:
    return respond(errors.error(404, f"There is no {request.method} {request.path} here: use POST /init and POST /run."))


def build_app(config: Config, stem: SpawnedProcess | None = None,
              socket_path: str | None = None) -> web.Application:
    # aiohttp's 1 MiB default body limit would refuse real actions (48 MiB code, base64'd)
    app = web.Application(client_max_size=config.max_body)
    runner = ActionRunner(config, stem, socket_path)
    app.add_routes(OpenWhiskPlatform(runner).routes())
    app.router.add_route("*", "/{tail:.*}", not_found)

    async def close_runner(_: web.Application) -> None:
        runner.close()

    app.on_cleanup.append(close_runner)
    return app


def serve(config: Config, sock: socket.socket, stem: SpawnedProcess | None = None,
          socket_path: str | None = None) -> None:
    import uvloop

    web.run_app(build_app(config, stem, socket_path), sock=sock, print=None, access_log=None,
                loop=uvloop.new_event_loop(), handle_signals=True)
