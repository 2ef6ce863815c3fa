"""The HTTP server: app factory, limits, the catch-all, and running on a pre-bound socket."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from actionproxy import errors
from actionproxy.autoinit import autoinit
from actionproxy.config import Config
from actionproxy.executor.process import SpawnedProcess
from actionproxy.lifecycle import Drain, health_routes
from actionproxy.platform.knative import KnativePlatform
from actionproxy.platform.openwhisk import OpenWhiskPlatform, respond
from actionproxy.runner import ActionRunner

BACKLOG = 1024


async def not_found(request: web.Request) -> web.Response:
    return respond(errors.error(404, f"There is no {request.method} {request.path} here: use POST /init and POST /run."))


def build_app(config: Config, stem: SpawnedProcess | None = None,
              socket_path: str | None = None) -> web.Application:
    # aiohttp's 1 MiB default body limit would refuse real actions (48 MiB code, base64'd)
    app = web.Application(client_max_size=config.max_body)
    runner = ActionRunner(config, stem, socket_path)
    app.on_startup.append(Drain(runner, config.drain_seconds).on_startup)  # owns SIGTERM/SIGINT
    platform = KnativePlatform(runner) if config.platform == "knative" else OpenWhiskPlatform(runner)
    app.add_routes(platform.routes())
    app.add_routes(health_routes(runner))
    app.router.add_route("*", "/{tail:.*}", not_found)
    if config.autoinit is not None:
        async def start_autoinit(_: web.Application) -> None:
            app["autoinit"] = asyncio.get_running_loop().create_task(autoinit(runner, config.autoinit))

        app.on_startup.append(start_autoinit)

    async def close_runner(_: web.Application) -> None:
        runner.close()

    app.on_cleanup.append(close_runner)
    return app


def serve(config: Config, sock: socket.socket, stem: SpawnedProcess | None = None,
          socket_path: str | None = None) -> None:
    import uvloop

    # backlog: aiohttp listens again on the socket, with 128 unless told (c=256 would drop SYNs).
    # Signals: the Drain handles them and then raises GracefulExit; shutdown_timeout bounds the
    # wait for handlers still answering once the listener is closed.
    web.run_app(build_app(config, stem, socket_path), sock=sock, print=None,
                access_log=None, backlog=BACKLOG, loop=uvloop.new_event_loop(), handle_signals=False,
                shutdown_timeout=config.drain_seconds)
