"""Serving the pre-bound socket for the life of the process.

In OpenWhisk mode the plain requests' server (plainhttp.py) serves the socket from the start;
aiohttp is imported in a thread when that server says it is time, and then takes the
connections it leaves to it (server.run_app). In Knative mode aiohttp serves the socket. The action baked into an image loads meanwhile either way.
"""

from __future__ import annotations

import asyncio
import importlib
import socket

from actionproxy.autoinit import autoinit
from actionproxy.config import Config
from actionproxy.executor.process import SpawnedProcess
from actionproxy.http.plainhttp import PlainServer
from actionproxy.runner import ActionRunner

BACKLOG = 1024  # the listening backlog (asyncio and aiohttp default to 100 and 128: c=256 would drop SYNs)


def serve(config: Config, sock: socket.socket, stem: SpawnedProcess | None = None,
          socket_path: str | None = None) -> None:
    """Serve until the drain (which owns SIGTERM/SIGINT) raises aiohttp's GracefulExit, then
    shut down."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(config, sock, ActionRunner(config, stem, socket_path)))
    try:
        loop.run_until_complete(main)
    except (SystemExit, KeyboardInterrupt):  # GracefulExit is a SystemExit
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


async def _serve(config: Config, sock: socket.socket, runner: ActionRunner) -> None:
    loop = asyncio.get_running_loop()
    starting = loop.create_task(autoinit(runner, config.autoinit)) if config.autoinit is not None else None
    plain = None
    if config.platform == "openwhisk":
        plain = PlainServer(runner, sock, BACKLOG)
        await plain.start()
        await plain.load_aiohttp.wait()
    server = await loop.run_in_executor(None, importlib.import_module, "actionproxy.http.server")
    try:
        await server.run_app(config, sock, runner, plain, BACKLOG)
    finally:
        if starting is not None:
            starting.cancel()
