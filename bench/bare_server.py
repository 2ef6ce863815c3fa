"""The ceiling: what aiohttp + uvloop do with no proxy, no IPC and no user process.

It does the in-process equivalent of the echo action behind the proxy: parse the
OpenWhisk /run body and answer with its `value`, so the ratio proxy/bare is the price of
the proxy's extra work (channel, launcher, framing), not of JSON or HTTP. Its listen backlog
is the 1024 that the proxy's CLI asks for.

Usage: python bench/bare_server.py --port N   (listens on 127.0.0.1 only)
"""

from __future__ import annotations

import argparse

import orjson
import uvloop
from aiohttp import web


async def run(request: web.Request) -> web.Response:
    message = orjson.loads(await request.read())
    return web.Response(body=orjson.dumps(message.get("value", {})), content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    app = web.Application(client_max_size=80 * 1024 * 1024)
    app.add_routes([web.post("/run", run)])
    web.run_app(app, host="127.0.0.1", port=port, backlog=1024, print=None, access_log=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
