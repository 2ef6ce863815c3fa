"""W3C Trace Context for each activation: the activation is a span of the caller's trace.

An incoming `traceparent` (with its `tracestate`) makes the activation a child span: same trace
id, a new span id. With none, or an invalid one (the W3C rules: lower-case hex, version ff,
all-zero ids), the activation starts a trace of its own, so that its log lines can still be
joined. The function sees its span as `TRACEPARENT`/`TRACESTATE` in its own environment, set
per activation like the `__OW_*` values: the launchers export the run request's top-level
`traceparent` and `tracestate` fields under those names, and the proxy appends them to the
request it forwards (appended, so they win over fields of the same name in the body).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

import orjson

TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
MAX_TRACESTATE = 512  # bytes a platform must pass on (W3C trace-context, tracestate limits)
FIELDS = ("traceparent", "tracestate")  # also exported without the __OW_ prefix, upper-cased
NOT_SAMPLED = "00"  # a trace the proxy starts: nothing records it unless a collector is set up
SAMPLED = "01"


@dataclass(frozen=True, slots=True)
class Trace:
    trace_id: str
    span_id: str  # the activation's own span
    parent_id: str  # the caller's span; "" for a trace the activation started
    flags: str
    state: str

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"

    def members(self, first: bool) -> bytes:
        """The request fields that carry it, as JSON members to append to an object."""
        fields = {"traceparent": self.traceparent, **({"tracestate": self.state} if self.state else {})}
        return (b"" if first else b",") + orjson.dumps(fields)[1:-1]


def _random_id(bits: int) -> str:
    """A random non-zero id in lower-case hex. Trace ids need to be unique, not secret: the
    interpreter's generator makes them without the two system calls per activation that
    os.urandom costs (the W3C recommendation is randomness, not a cryptographic source). Its
    ids can be predicted from a few hundred earlier ones: never use one as a credential."""
    return f"{random.getrandbits(bits) or 1:0{bits // 4}x}"


def activation_trace(traceparent: object, tracestate: object, sample: bool = False) -> Trace:
    """The activation's span: a child of a valid incoming parent, else the root of a new trace
    (sampled when `sample`: its spans are exported)."""
    span = _random_id(64)
    parent = TRACEPARENT.fullmatch(traceparent.strip()) if isinstance(traceparent, str) else None
    if (parent is None or parent[1] == "ff" or (parent[1] == "00" and parent[5] is not None)
            or parent[2] == "0" * 32 or parent[3] == "0" * 16):
        return Trace(_random_id(128), span, "", SAMPLED if sample else NOT_SAMPLED, "")
    state = tracestate.strip() if isinstance(tracestate, str) else ""
    if len(state) > MAX_TRACESTATE or not state.isprintable():
        state = ""
    return Trace(parent[2], span, parent[3], parent[4], state)
