"""The ceiling: what aiohttp + uvloop do with no proxy, no IPC and no user process.

It does the in-process equivalent of the echo action behind the proxy: parse the
OpenWhisk /run body and answer with its `value`, so the ratio proxy/bare is the price of
the proxy's extra work (channel, launcher, framing), not of JSON or HTTP. Its listen backlog
is the 1024 that the proxy's CLI asks for.

With --wait S it is instead the in-process equivalent of bench/actions/wait_async.py for
the in-flight scenario: sleep S seconds, then answer {"id": value["i"]}.

With --stream it is the in-process equivalent of the streaming actions (bench/actions/stream_*):
POST / with {"n": N, "size": S} answers N NDJSON lines {"s": "x" * S}, each written as made.

Usage: python bench/bare_server.py --port N [--wait S | --stream]   (listens on 127.0.0.1 only)
"""

from __future__ import annotations

import argparse
import asyncio

import orjson
import uvloop
from aiohttp import web


async def run(request: web.Request) -> web.Response:
    message = orjson.loads(await request.read())
    return web.Response(body=orjson.dumps(message.get("value", {})), content_type="application/json")


def waiting(seconds: float):
    async def run(request: web.Request) -> web.Response:
        message = orjson.loads(await request.read())
        await asyncio.sleep(seconds)
        return web.Response(body=orjson.dumps({"id": message.get("value", {}).get("i")}),
                            content_type="application/json")

    return run


async def stream(request: web.Request) -> web.StreamResponse:
    params = orjson.loads(await request.read())
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for _ in range(params.get("n", 1)):
        await response.write(orjson.dumps({"s": "x" * params.get("size", 1)}) + b"\n")
    await response.write_eof()
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--wait", type=float, help="answer {id: value.i} after this many seconds")
    parser.add_argument("--stream", action="store_true", help="POST / streams NDJSON lines")
    args = parser.parse_args()
    port = args.port
    app = web.Application(client_max_size=80 * 1024 * 1024)
    app.add_routes([web.post("/run", run if args.wait is None else waiting(args.wait))])
    if args.stream:
        app.add_routes([web.post("/", stream)])
    web.run_app(app, host="127.0.0.1", port=port, backlog=1024, print=None, access_log=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
