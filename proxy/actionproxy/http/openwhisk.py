"""The OpenWhisk action contract's aiohttp routes, `POST /init` and `POST /run`; the rules
themselves are in contract.py."""

from __future__ import annotations

from aiohttp import web

from actionproxy import errors
from actionproxy.activation import ActivationResult
from actionproxy.http.body import read_body
from actionproxy.http.contract import OpenWhiskContract
from actionproxy.runner import ActionRunner

JSON = "application/json"


def respond(result: ActivationResult) -> web.Response:
    return web.Response(status=result.status, body=result.body, content_type=JSON)


class OpenWhiskPlatform:
    """The aiohttp routes of the contract: read the body (decoded, within the limit), answer."""

    def __init__(self, runner: ActionRunner) -> None:
        self.runner = runner
        self.contract = OpenWhiskContract(runner)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/init", self.init), web.post("/run", self.run)]

    async def init(self, request: web.Request) -> web.Response:
        if not self.contract.takes_init_body:
            return respond(await self.contract.refused_init())
        body = await read_body(request, self.runner.config.max_body)
        if isinstance(body, ActivationResult):
            return respond(body)
        return respond(await self.contract.init(body))

    async def run(self, request: web.Request) -> web.Response:
        if not self.contract.takes_run_body:
            return respond(errors.not_initialized())
        body = await read_body(request, self.runner.config.max_body)
        if isinstance(body, ActivationResult):
            return respond(body)
        return respond(await self.contract.run(body, request.headers.get("traceparent"),
                                               request.headers.get("tracestate")))
