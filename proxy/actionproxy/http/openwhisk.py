"""The OpenWhisk action contract: `POST /init` and `POST /run` (spec sections a.2-a.5).

Only request shapes and response rules live here; the work is done by the ActionRunner.
"""

from __future__ import annotations


import orjson
from aiohttp import web

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.http.body import read_body
from actionproxy.http.deadline import Deadlines
from actionproxy.http.initfields import parse_init
from actionproxy.runner import ActionRunner, Load

JSON = "application/json"


def respond(result: ActivationResult) -> web.Response:
    return web.Response(status=result.status, body=result.body, content_type=JSON)


class OpenWhiskPlatform:
    def __init__(self, runner: ActionRunner) -> None:
        self.runner = runner
        self.deadlines = Deadlines()

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/init", self.init), web.post("/run", self.run)]

    async def init(self, request: web.Request) -> web.Response:
        if self.runner.load is not Load.EMPTY:  # refused: no need to read the body
            return respond(await self.runner.init("", False, "", {}))
        body = await read_body(request, self.runner.config.max_body)
        if isinstance(body, ActivationResult):
            return respond(body)
        try:
            message = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            return respond(errors.error(400, f"Error unmarshaling request: {exc}"))
        if not isinstance(message, dict):
            return respond(errors.error(400, "Error unmarshaling request: the body must be a JSON object"))
        value = message.get("value")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return respond(errors.error(400, "Error unmarshaling request: 'value' must be a JSON object"))
        fields = parse_init(value)
        if isinstance(fields, ActivationResult):
            return respond(fields)
        return respond(await self.runner.init(fields.code, fields.binary, fields.main, fields.env))

    async def run(self, request: web.Request) -> web.Response:
        if not (self.runner.ready or self.runner.starting):
            return respond(errors.not_initialized())
        body = await read_body(request, self.runner.config.max_body)
        if isinstance(body, ActivationResult):
            return respond(body)
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return respond(errors.bad_json("request", exc))
        if not isinstance(message, dict):
            return respond(errors.error(400, "The request body must be a JSON object with a 'value' field."))
        value = message.get("value", {})
        if not isinstance(value, (dict, list)):
            self.runner.logs.proxy_error("", sentinels=True)
            return respond(errors.error(404, errors.BAD_ARGUMENT))
        deadline = self.deadlines.parse(message.get("deadline"))
        if isinstance(deadline, ActivationResult):
            return respond(deadline)
        activation = Activation(body, str(message.get("activation_id") or ""), deadline, message)
        return respond(await self.runner.run(activation))
