"""Knative mode: one route (`/`) that takes OpenWhisk's Knative envelopes or any body at all,
and answers like an OpenWhisk web action (spec section c; tekton-knative.md section 5.3).

Request shapes on `/` (with the methods of __OW_HTTP_METHODS, POST by default):
- `{"init": {...}}`, `{"activation": {...}, "value": {...}}`, or both (init, then run);
- `{"value": {...}}` alone, or any other JSON object: the function's parameters;
- any other body or content type: `__ow_body` (text, or base64 for binary types).
Every run also gets the HTTP context: `__ow_method`, `__ow_headers`, `__ow_path`,
`__ow_query`, `__ow_user`; with __OW_ACTION_RAW=true the parameters come only as `__ow_body`.
Default parameters (ACTIONPROXY_PARAMS_FILE, then ACTIONPROXY_PARAM_<name>) are merged under
each request's own. A CloudEvent (binary or structured mode) is answered with one
(cloudevents.py).

Fixed against OpenWhisk's Knative mode: the action of a dedicated image is loaded at start-up,
a bare body is accepted, CORS header values are spelt right, errors are JSON with a fitting
status, and a failing run in the init+run path still gets an answer.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from actionproxy.activation import Activation, ActivationResult
from actionproxy.config import Config
from actionproxy.http import cloudevents
from actionproxy.http.body import read_body
from actionproxy.http.deadline import Deadlines
from actionproxy.http.initfields import InitFields, parse_init
from actionproxy.http.streaming import respond_streaming
from actionproxy.http.webaction import CORS, is_text, json_response, web_response
from actionproxy.runner import ActionRunner, Load
from actionproxy.tracecontext import FIELDS, activation_trace

DEDICATED = "Cannot initialize a runtime with a dedicated function: its action was loaded at start-up."
CONTEXT_ENV = ("K_SERVICE", "K_REVISION", "K_CONFIGURATION")


def default_params(config: Config) -> dict[str, Any]:
    """Bound parameters, lowest precedence first: the JSON file, then ACTIONPROXY_PARAM_*
    (a value that parses as JSON is taken as JSON, otherwise as a string)."""
    params: dict[str, Any] = {}
    if config.params_file is not None:
        loaded = json.loads(Path(config.params_file).read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{config.params_file} must hold a JSON object")
        params.update(loaded)
    for name, raw in config.env_params:
        try:
            params[name] = json.loads(raw)
        except ValueError:
            params[name] = raw
    return params


class KnativePlatform:
    def __init__(self, runner: ActionRunner) -> None:
        self.runner = runner
        self.config = runner.config
        self.defaults = default_params(self.config)
        self.context = {name.lower(): os.environ[name] for name in CONTEXT_ENV if os.environ.get(name)}
        self.deadlines = Deadlines(runner.started_ms)
        self.event_source = os.environ.get("ACTIONPROXY_CE_SOURCE") or os.environ.get("K_SERVICE") or "actionproxy"
        self.event_type = os.environ.get("ACTIONPROXY_CE_TYPE") or cloudevents.DEFAULT_TYPE
        self._loaded: bytes | None = None  # which init this stem cell holds

    @property
    def app(self) -> bool:
        """Blackbox http mode: every request goes to the app as it came (httpapp.py)."""
        return self.config.runtime == "blackbox" and self.config.blackbox_mode == "http"

    def routes(self) -> list[web.RouteDef]:
        if self.app:
            return [web.route("*", "/{tail:.*}", self.relay)]
        routes = [web.route(method, "/", self.handle) for method in self.config.http_methods]
        if "OPTIONS" not in self.config.http_methods:
            routes.append(web.options("/", self.preflight))
        return routes

    async def preflight(self, _: web.Request) -> web.Response:
        return web.Response(status=200, headers=CORS)

    # ------------------------------------------------------------------ requests
    async def relay(self, request: web.Request) -> web.StreamResponse:
        """To the app and back, as one activation (deadline, metrics, drain, trace)."""
        activation = self._activation(request, {}, {})
        if isinstance(activation, ActivationResult):
            return web_response(activation)
        activation.forward = request
        result = await self.runner.run(activation)
        return activation.response if activation.response is not None else web_response(result)

    async def handle(self, request: web.Request) -> web.Response:
        body = await read_body(request, self.config.max_body)
        if isinstance(body, ActivationResult):
            return web_response(body)
        try:
            event = cloudevents.from_request(request.headers, request.content_type, body)
        except cloudevents.EventError as exc:
            return json_response(400, {"error": str(exc)})
        if event is not None:
            return await self._event(request, event)
        message = self._envelope(request, body)
        if message is None:
            return json_response(400, {"error": "The request body is not valid JSON."})
        if "init" in message:
            init = message["init"]
            if self.runner.dedicated:
                return json_response(403, {"error": DEDICATED})
            if not isinstance(init, dict):
                return json_response(400, {"error": "'init' must be a JSON object."})
            fields = parse_init(init)
            if isinstance(fields, ActivationResult):
                return web_response(fields)
            result = await self._init(fields)
            if result.status != 200 or not ("value" in message or "activation" in message):
                return web_response(result)
        if not (self.runner.ready or self.runner.starting):
            return json_response(500, {"error": "No action is loaded yet: send an 'init' first."})
        return await self._run(request, message, body)

    async def _init(self, init: InitFields) -> ActivationResult:
        """A stem cell's init. Routing sends init+run to whichever container it picks, so the
        init of the action already loaded here is a no-op; a different one is refused."""
        key = hashlib.sha256(orjson.dumps([init.code, init.binary, init.main, init.env],
                                          option=orjson.OPT_SORT_KEYS)).digest()
        if self.runner.load is Load.LOADED and key == self._loaded:
            return ActivationResult(200, b'{"ok":true}')
        result = await self.runner.init(init.code, init.binary, init.main, init.env)
        if result.status == 200:
            self._loaded = key
        return result

    def _envelope(self, request: web.Request, body: bytes) -> dict | None:
        """The request as {init?, activation?, value}; None for a JSON body that does not parse."""
        content_type = request.content_type
        if body and (content_type == "application/json" or content_type.endswith("+json")):
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return None
            if isinstance(parsed, dict) and ({"init", "activation", "value"} & parsed.keys()):
                return parsed
            return {"value": parsed, "raw": body}
        if not body:
            return {"value": {}}
        encoded = body.decode("utf-8", "replace") if is_text(content_type) else base64.b64encode(body).decode()
        return {"value": {"__ow_body": encoded}, "raw": body}

    async def _run(self, request: web.Request, message: dict, body: bytes) -> web.Response:
        value = message.get("value", {})
        if not isinstance(value, (dict, list)):
            value = {"__ow_body": value}
        http = self._http_context(request)
        if self.config.raw_http:
            raw = message.get("raw") or orjson.dumps(value)
            params: Any = {**http, "__ow_body": base64.b64encode(raw).decode()}
        elif isinstance(value, dict):
            params = {**self.defaults, **dict(request.query), **value, **http}
        else:
            params = value
        fields = message.get("activation") if isinstance(message.get("activation"), dict) else {}
        activation = self._activation(request, params, fields)
        if isinstance(activation, ActivationResult):
            return web_response(activation)
        return await respond_streaming(request, activation, self.runner.run, web_response, CORS)

    async def _event(self, request: web.Request, event: cloudevents.CloudEvent) -> web.Response:
        """A CloudEvent in, a CloudEvent out (or the web-action answer the result asks for)."""
        if not (self.runner.ready or self.runner.starting):
            return json_response(500, {"error": "No action is loaded yet: send an 'init' first."})
        params = {**self.defaults, **cloudevents.params(event), **self._http_context(request)}
        trace = {name: event.attributes[name] for name in FIELDS if name in event.attributes}
        activation = self._activation(request, params, trace)
        result = activation if isinstance(activation, ActivationResult) else await self.runner.run(activation)
        payload = orjson.loads(result.body) if result.status == 200 else None
        if not cloudevents.is_event_result(payload):
            return web_response(result)
        try:
            status, headers, data = cloudevents.reply(payload, self.event_source, self.event_type)
        except cloudevents.EventError as exc:
            return json_response(502, {"error": f"The action's CloudEvent reply cannot be sent: {exc}"})
        return web.Response(status=status, body=data, headers={**CORS, **headers})

    @staticmethod
    def _http_context(request: web.Request) -> dict[str, Any]:
        return {
            "__ow_method": request.method,
            "__ow_headers": {k.lower(): v for k, v in request.headers.items()},
            "__ow_path": request.match_info.get("tail", ""),
            "__ow_query": dict(request.query),
            "__ow_user": os.environ.get("__OW_NAMESPACE", ""),
        }

    def _activation(self, request: web.Request, params: Any, activation: dict) -> Activation | ActivationResult:
        """The activation with its context fields (Knative's own, then the request's), in the
        trace of the request's `traceparent` header (else of such a field); or its error."""
        context = {**self.context, **{k: v for k, v in activation.items() if k != "value"}}
        if "traceparent" in request.headers:
            context["traceparent"], context["tracestate"] = request.headers["traceparent"], request.headers.get("tracestate")
        trace = activation_trace(context.pop("traceparent", None), context.pop("tracestate", None),
                                 self.runner.spans is not None)
        context.setdefault("activation_id", uuid.uuid4().hex)
        deadline = self.deadlines.parse(context.get("deadline"))
        if isinstance(deadline, ActivationResult):
            return deadline
        run = {**context, "value": params}
        return Activation(orjson.dumps(run), str(context["activation_id"]), deadline, run, trace=trace)
