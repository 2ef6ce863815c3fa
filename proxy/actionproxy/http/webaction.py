"""A result as a web action answers (Knative mode): `statusCode`, `headers` and `body` when the
result has them, else the result as JSON.

The action chooses the status and headers, so they are checked before they reach the wire: a
status outside 200-599, headers that are not an object of token names to scalar values, or a
control character that would split the response is the action's fault, answered with a JSON
502 naming it. The proxy frames its own answers, so the action's framing and hop-by-hop headers
(Content-Length beside a different body, Transfer-Encoding, Connection, ...) are dropped.
"""

from __future__ import annotations

import base64
import re
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict

from actionproxy.activation import ActivationResult

CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "OPTIONS, GET, DELETE, POST, PUT, HEAD, PATCH",
    "Access-Control-Allow-Headers": "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent",
}
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
              "application/x-www-form-urlencoded")
DROPPED = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "proxy-connection",
                     "te", "trailer", "upgrade"})
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
BAD_VALUE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but the tab
DIGITS = re.compile(r"[0-9]{1,3}")


class InvalidResponse(Exception):
    """The action's statusCode or headers cannot be sent."""


def is_text(content_type: str) -> bool:
    return content_type.startswith(TEXT_TYPES) or content_type.endswith(("+json", "+xml"))


def json_response(status: int, payload: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json",
                        headers=CORS)


def web_response(result: ActivationResult) -> web.Response:
    """An application error ({"error": ...}) is a 400, a rejected activation (cap) a 503, the
    proxy's other errors keep their status."""
    payload = orjson.loads(result.body)
    if result.status != 200:
        return json_response(503 if result.status == 429 else result.status, payload)
    if isinstance(payload, dict) and "error" in payload:
        return json_response(400, payload)
    if not (isinstance(payload, dict) and {"statusCode", "headers", "body"} & payload.keys()):
        return json_response(200, payload)
    try:
        status = _status(payload.get("statusCode"))
        headers = _headers(payload.get("headers"))
    except InvalidResponse as exc:
        return json_response(502, {"error": f"The action's web response cannot be sent: {exc}"})
    content_type = headers.popall("Content-Type", [None])[0]
    body = payload.get("body")
    if content_type is None:
        content_type = "text/html" if isinstance(body, str) else "application/json"
    if body is None or body == "":
        data = b""
    elif isinstance(body, str):
        data = body.encode("utf-8") if is_text(content_type) else _decode_binary(body)
    else:
        data = orjson.dumps(body)
    if status == 200 and not data:
        status = 204
    for name, value in CORS.items():
        headers.setdefault(name, value)
    if status == 204:
        return web.Response(status=204, headers=headers)
    headers["Content-Type"] = content_type
    return web.Response(status=status, body=data, headers=headers)


def _status(raw: object) -> int:
    """An integer, or a string of digits (web actions take both), of a final status; none: 200."""
    if raw is None:
        return 200
    if isinstance(raw, int) and not isinstance(raw, bool) and 200 <= raw <= 599:
        return raw
    if isinstance(raw, str) and DIGITS.fullmatch(raw) and 200 <= int(raw) <= 599:
        return int(raw)
    raise InvalidResponse(f"statusCode {_shown(raw)} is not an HTTP status from 200 to 599")


def _headers(raw: object) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    if raw is None:
        return headers
    if not isinstance(raw, dict):
        raise InvalidResponse(f"headers must be an object of names to values, not {_shown(raw)}")
    for name, value in raw.items():
        if not TOKEN.fullmatch(name):
            raise InvalidResponse(f"{name!r} is not a valid header name")
        for one in value if isinstance(value, list) else [value]:
            text = _header_value(name, one)
            if name.lower() not in DROPPED:
                headers.add(name, text)
    return headers


def _header_value(name: str, value: object) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise InvalidResponse(f"header {name} has the value {_shown(value)}: a header takes a string, "
                              f"a number, a boolean or a list of them")
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if BAD_VALUE_CHARS.search(text):
        raise InvalidResponse(f"header {name} has a control character in its value {text!r}")
    return text


def _shown(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def _decode_binary(body: str) -> bytes:
    """Binary content types carry their body base64-encoded (as web actions do)."""
    try:
        return base64.b64decode(body, validate=True)
    except ValueError:
        return body.encode("utf-8")
