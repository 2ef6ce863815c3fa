"""The HTTP server: app factory, limits, the catch-all, and running on a pre-bound socket."""

from __future__ import annotations

import asyncio
import socket
from typing import AsyncIterator

from aiohttp import web

from actionproxy import errors
from actionproxy.autoinit import autoinit
from actionproxy.config import Config
from actionproxy.executor.process import SpawnedProcess
from actionproxy.http.lifecycle import Drain, health_routes
from actionproxy.http.knative import KnativePlatform
from actionproxy.http.openwhisk import OpenWhiskPlatform, respond
from actionproxy.http.readtimeouts import TimedSockSite, bounded_body
from actionproxy.runner import ActionRunner

BACKLOG = 1024
AUTOINIT = web.AppKey("autoinit", asyncio.Task)  # holds the start-up load, so it is not collected
KEEPALIVE_SECONDS = 75.0  # an idle kept-alive connection is closed after this (web.run_app's default)


async def not_found(request: web.Request) -> web.Response:
    return respond(errors.error(404, f"There is no {request.method} {request.path} here: use POST /init and POST /run."))


def build_app(config: Config, stem: SpawnedProcess | None = None,
              socket_path: str | None = None) -> web.Application:
    # aiohttp's 1 MiB default body limit would refuse real actions (48 MiB code, base64'd)
    app = web.Application(client_max_size=config.max_body, middlewares=[bounded_body(config.body_timeout)])
    runner = ActionRunner(config, stem, socket_path)
    app.on_startup.append(Drain(runner, config.drain_seconds).on_startup)  # owns SIGTERM/SIGINT
    platform = KnativePlatform(runner) if config.platform == "knative" else OpenWhiskPlatform(runner)
    app.add_routes(platform.routes())
    app.add_routes(health_routes(runner))
    app.router.add_route("*", "/{tail:.*}", not_found)

    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        """The baked-in action loads while the server already answers; the runner's processes
        are stopped when the server is."""
        if config.autoinit is not None:
            app[AUTOINIT] = asyncio.get_running_loop().create_task(autoinit(runner, config.autoinit))
        yield
        runner.close()

    app.cleanup_ctx.append(lifetime)
    return app


def serve(config: Config, sock: socket.socket, stem: SpawnedProcess | None = None,
          socket_path: str | None = None) -> None:
    """Serve until the Drain (which owns SIGTERM/SIGINT) raises GracefulExit, then shut down.
    Not web.run_app: it cannot wrap each connection's protocol, which the head timeout needs."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(build_app(config, stem, socket_path), config, sock))
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()  # its cleanup closes the listener and waits for handlers still answering
        loop.run_until_complete(asyncio.gather(main, return_exceptions=True))
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


async def _serve(app: web.Application, config: Config, sock: socket.socket) -> None:
    # backlog: aiohttp listens again on the socket, with 128 unless told (c=256 would drop SYNs).
    # shutdown_timeout bounds the wait for handlers still answering once the listener is closed.
    runner = web.AppRunner(app, access_log=None, auto_decompress=False, handle_signals=False, shutdown_timeout=config.drain_seconds,
                           keepalive_timeout=KEEPALIVE_SECONDS)
    await runner.setup()
    try:
        await TimedSockSite(runner, sock, config.header_timeout, BACKLOG).start()
        await asyncio.Event().wait()  # until GracefulExit stops the loop
    finally:
        await runner.cleanup()
