"""The OpenWhisk action contract on bytes (spec sections a.2-a.5): a `/init` or `/run` body to
its result, and the health answers. No aiohttp here: the aiohttp routes (openwhisk.py,
lifecycle.py) and the plain requests' server (plainhttp.py) answer with the same functions.
Only request shapes and response rules live here; the work is done by the ActionRunner.
"""

from __future__ import annotations

import orjson

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.http.deadline import Deadlines
from actionproxy.http.initfields import parse_init
from actionproxy.runner import ActionRunner, Load
from actionproxy.tracecontext import activation_trace


class OpenWhiskContract:
    def __init__(self, runner: ActionRunner) -> None:
        self.runner = runner
        self.deadlines = Deadlines(runner.started_ms)

    @property
    def takes_init_body(self) -> bool:
        """A refused /init is answered without reading its body."""
        return self.runner.load is Load.EMPTY

    @property
    def takes_run_body(self) -> bool:
        return self.runner.ready or self.runner.starting

    async def refused_init(self) -> ActivationResult:
        return await self.runner.init("", False, "", {})

    async def init(self, body: bytes) -> ActivationResult:
        try:
            message = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError as exc:
            return errors.error(400, f"Error unmarshaling request: {exc}")
        if not isinstance(message, dict):
            return errors.error(400, "Error unmarshaling request: the body must be a JSON object")
        value = message.get("value")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            return errors.error(400, "Error unmarshaling request: 'value' must be a JSON object")
        fields = parse_init(value)
        if isinstance(fields, ActivationResult):
            return fields
        return await self.runner.init(fields.code, fields.binary, fields.main, fields.env)

    async def run(self, body: bytes, traceparent: str | None = None, tracestate: str | None = None) -> ActivationResult:
        """`traceparent`/`tracestate`: the request's headers; fields of the body win over them."""
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return errors.bad_json("request", exc)
        if not isinstance(message, dict):
            return errors.error(400, "The request body must be a JSON object with a 'value' field.")
        value = message.get("value", {})
        if not isinstance(value, (dict, list)):
            self.runner.logs.proxy_error("", sentinels=True)
            return errors.error(404, errors.BAD_ARGUMENT)
        deadline = self.deadlines.parse(message.get("deadline"))
        if isinstance(deadline, ActivationResult):
            return deadline
        if "traceparent" in message:
            traceparent, tracestate = message.get("traceparent"), message.get("tracestate")
        activation = Activation(body, str(message.get("activation_id") or ""), deadline, message,
                                trace=activation_trace(traceparent, tracestate, self.runner.spans is not None))
        return await self.runner.run(activation)


def not_taking_work(runner: ActionRunner) -> str | None:
    """Why the proxy cannot take work now, or None."""
    if runner.draining:
        return "draining"
    if runner.starting:
        return "starting"
    if runner.inflight >= runner.config.max_concurrent:
        return "full"
    return None


def health(runner: ActionRunner, path: str) -> ActivationResult:
    """/healthz, /readyz or /livez (lifecycle.py says what each means)."""
    if path == "/livez":
        return ActivationResult(200, b'{"alive":true}')
    if path == "/healthz":
        reason = not_taking_work(runner)
        if reason is not None:
            return ActivationResult(503, b'{"ok":false,"reason":"%s"}' % reason.encode())
        return ActivationResult(200, b'{"ok":true}')
    reason = not_taking_work(runner) or (None if runner.ready else "not initialized")
    if reason is not None:
        return ActivationResult(503, b'{"ready":false,"reason":"%s"}' % reason.encode())
    return ActivationResult(200, b'{"ready":true}')


HEALTH_PATHS = ("/healthz", "/readyz", "/livez")
