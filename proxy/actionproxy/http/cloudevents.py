"""CloudEvents 1.0 over HTTP in Knative mode: an event in (binary or structured content mode),
an event out (binary mode), so that a Knative Eventing broker can route the reply.

In: binary mode is a request with a `ce-specversion` header (every `ce-*` header an attribute,
the body the data, Content-Type its `datacontenttype`); structured mode is a body of type
`application/cloudevents+json` (attributes and `data` or `data_base64` in one JSON object).
The function gets every attribute as a parameter `__ce_<name>`, and the data as its
parameters when it is a JSON object, else as `__ce_data` (JSON as parsed, text as a string,
anything else base64).

Out: a result without web-action keys becomes a binary-mode event: `ce-specversion: 1.0`, a new
`ce-id`, `ce-source` (ACTIONPROXY_CE_SOURCE, else K_SERVICE), `ce-type` (the result's
`__ce_type`, else ACTIONPROXY_CE_TYPE); any other `__ce_<name>` key of the result becomes
`ce-<name>` (and may replace id and source; `specversion` and `datacontenttype` are
ignored, as the reply is always 1.0 and JSON), the rest of the result is the JSON data. An empty
result is acknowledged with 202 and no event (Knative then routes nothing).

The SDK (`cloudevents` on PyPI) is not used: it pulls in its own HTTP and conversion layers,
and these few rules are all the proxy needs.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote, unquote

import orjson

SPECVERSION = "1.0"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
PREFIX = "__ce_"
REQUIRED = ("id", "source", "type")
DEFAULT_TYPE = "dev.actionproxy.response"  # a reply's type unless ACTIONPROXY_CE_TYPE or the result says
FIXED = ("specversion", "datacontenttype")  # of a reply: not the function's to set
NAME = re.compile(r"[a-z0-9]+")  # CloudEvents attribute names: lower-case letters and digits
# printable ASCII but space, '"' and '%' stays as it is in a header (the HTTP binding, 3.1.3.2)
HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


class EventError(ValueError):
    """A request that says it is a CloudEvent but is not a valid one (a 400)."""


@dataclass(frozen=True)
class CloudEvent:
    attributes: dict[str, str]
    data: Any  # None: no data


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


def from_request(headers: Mapping[str, str], content_type: str, body: bytes) -> CloudEvent | None:
    """The event a request carries; None for a request that is not one."""
    if content_type == STRUCTURED:
        return _structured(body)
    if content_type == BATCH:
        raise EventError("CloudEvents batch mode is not supported: send one event per request.")
    if "ce-specversion" not in headers:
        return None
    attributes = {name[3:].lower(): unquote(value) for name, value in headers.items()
                  if name.lower().startswith("ce-") and len(name) > 3}
    if body:
        attributes["datacontenttype"] = headers.get("Content-Type") or "application/json"
    _check(attributes)
    return CloudEvent(attributes, _data(body, content_type) if body else None)


def _structured(body: bytes) -> CloudEvent:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"The structured CloudEvent is not valid JSON: {exc}") from exc
    if not isinstance(event, dict):
        raise EventError("A structured CloudEvent must be a JSON object.")
    data = event.pop("data", None)
    encoded = event.pop("data_base64", None)
    if data is not None and encoded is not None:
        raise EventError("A CloudEvent has 'data' or 'data_base64', not both.")
    attributes = {name: value if isinstance(value, str) else orjson.dumps(value).decode()
                  for name, value in event.items()}
    _check(attributes)
    if encoded is not None:
        if not isinstance(encoded, str):
            raise EventError("'data_base64' must be a string.")
        try:
            base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise EventError(f"'data_base64' is not valid base64: {exc}") from exc
        return CloudEvent(attributes, encoded)
    return CloudEvent(attributes, data)  # JSON data as it is, text data as a string


def _check(attributes: dict[str, str]) -> None:
    if attributes.get("specversion") != SPECVERSION:
        raise EventError(f"Only CloudEvents {SPECVERSION} is supported, not specversion "
                         f"{attributes.get('specversion')!r}.")
    missing = [name for name in REQUIRED if not attributes.get(name)]
    if missing:
        raise EventError(f"The CloudEvent lacks its required attribute(s): {', '.join(missing)}.")
    bad = [name for name in attributes if not NAME.fullmatch(name)]
    if bad:
        raise EventError(f"Not CloudEvents attribute names (lower-case letters and digits): {', '.join(bad)}.")


def _data(body: bytes, content_type: str) -> Any:
    """Binary mode's body: JSON parsed, text as text, anything else base64."""
    if is_json(content_type):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise EventError(f"The event's data is not valid JSON: {exc}") from exc
    if content_type.startswith("text/"):
        return body.decode("utf-8", "replace")
    return base64.b64encode(body).decode()


def params(event: CloudEvent) -> dict[str, Any]:
    """The function's parameters: a JSON object's fields, else `__ce_data`; the attributes."""
    fields = event.data if isinstance(event.data, dict) else {} if event.data is None else {"__ce_data": event.data}
    return {**fields, **{PREFIX + name: value for name, value in event.attributes.items()}}


def is_event_result(payload: Any) -> bool:
    """A result that is answered as an event: an object, no error, no web-action keys."""
    return (isinstance(payload, dict) and "error" not in payload
            and not {"statusCode", "headers", "body"} & payload.keys())


def reply(payload: dict[str, Any], source: str, default_type: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the binary-mode event that answers; EventError when the
    result's `__ce_*` keys cannot be attributes."""
    data = {key: value for key, value in payload.items() if not key.startswith(PREFIX)}
    if not payload:
        return 202, {}, b""
    attributes = {"id": uuid.uuid4().hex, "source": source, "type": default_type}
    for key, value in payload.items():
        if key.startswith(PREFIX):
            name = key[len(PREFIX):]
            if name in FIXED:  # an echo of the incoming event's: the reply is 1.0 and JSON
                continue
            if not NAME.fullmatch(name):
                raise EventError(f"The result's {key!r} cannot be a CloudEvents attribute.")
            attributes[name] = value if isinstance(value, str) else orjson.dumps(value).decode()
    headers = {"ce-specversion": SPECVERSION, **{"ce-" + name: quote(value, safe=HEADER_SAFE)
                                                 for name, value in attributes.items()}}
    if not data:
        return 200, headers, b""
    headers["Content-Type"] = "application/json"
    return 200, headers, orjson.dumps(data)
