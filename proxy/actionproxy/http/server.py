"""The aiohttp server: app factory, limits, the catch-all, and running on the pre-bound socket
in Knative mode, or behind the plain requests' server in OpenWhisk mode (imported by
serving.py once the first requests are answered)."""

from __future__ import annotations

import asyncio
import socket
from typing import AsyncIterator

from aiohttp import web

from actionproxy import errors
from actionproxy.config import Config
from actionproxy.http.lifecycle import Drain, health_routes
from actionproxy.http.knative import KnativePlatform
from actionproxy.http.openwhisk import OpenWhiskPlatform, respond
from actionproxy.http.plainhttp import KEEPALIVE_SECONDS, PlainServer
from actionproxy.http.readtimeouts import TimedSockSite, bounded_body, timed_protocols
from actionproxy.runner import ActionRunner

DRAIN = web.AppKey("drain", Drain)


async def not_found(request: web.Request) -> web.Response:
    return respond(errors.error(404, f"There is no {request.method} {request.path} here: use POST /init and POST /run."))


def build_app(config: Config, runner: ActionRunner) -> web.Application:
    # aiohttp's 1 MiB default body limit would refuse real actions (48 MiB code, base64'd)
    app = web.Application(client_max_size=config.max_body, middlewares=[bounded_body(config.body_timeout)])
    app[DRAIN] = Drain(runner, config.drain_seconds)
    app.on_startup.append(app[DRAIN].on_startup)  # owns SIGTERM/SIGINT
    platform = KnativePlatform(runner) if config.platform == "knative" else OpenWhiskPlatform(runner)
    app.add_routes(health_routes(runner))  # first: an app's catch-all route (knative.py) must not take them
    app.add_routes(platform.routes())
    if not (isinstance(platform, KnativePlatform) and platform.app):  # an app answers every other path itself
        app.router.add_route("*", "/{tail:.*}", not_found)

    async def lifetime(_: web.Application) -> AsyncIterator[None]:
        """The runner's processes are stopped when the server is."""
        yield
        runner.close()

    app.cleanup_ctx.append(lifetime)
    return app


async def run_app(config: Config, sock: socket.socket, runner: ActionRunner, plain: PlainServer | None,
                  backlog: int) -> None:
    """aiohttp until the drain ends the loop: on the socket, or taking the connections the plain
    requests' server leaves to it, and then a signal that server received starts the drain.
    Not web.run_app: it cannot wrap each connection's protocol, which the head timeout needs."""
    app = build_app(config, runner)
    # shutdown_timeout bounds the wait for handlers still answering once the listener is closed
    app_runner = web.AppRunner(app, access_log=None, auto_decompress=False, handle_signals=False,
                               shutdown_timeout=config.drain_seconds, keepalive_timeout=KEEPALIVE_SECONDS)
    await app_runner.setup()
    try:
        if plain is None:
            await TimedSockSite(app_runner, sock, config.header_timeout, backlog).start()
        else:
            assert app_runner.server is not None
            plain.aiohttp_ready(timed_protocols(app_runner.server, config.header_timeout))
            if plain.signal is not None:
                app[DRAIN].begin(plain.signal)
        await asyncio.Event().wait()  # until GracefulExit stops the loop
    finally:
        if plain is not None:
            await plain.close(config.drain_seconds)
        await app_runner.cleanup()
