"""One activation: the request as received, its context, its deadline, and what it produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from actionproxy.logs import ActivationLogs
from actionproxy.tracecontext import Trace


@dataclass(frozen=True)
class ActivationResult:
    """The HTTP status and JSON body the platform gets back."""

    status: int
    body: bytes | bytearray  # a large result stays the buffer it was read into, never copied


@dataclass
class Activation:
    """A `/run` request after validation; `body` is forwarded to the launcher untouched."""

    body: bytes
    activation_id: str
    deadline: float | None  # loop time (monotonic seconds) by which it must finish
    request: dict | None = None  # the parsed body, for executors that need its fields
    logs: ActivationLogs = field(default_factory=ActivationLogs)
    trace: Trace | None = None
    # a streamed result's chunks (JSON each) go here as they arrive; without it they are
    # collected into one result, {"chunks": [...]}
    on_chunk: Callable[[bytes], None] | None = None
    # set by the executor while it runs: give up on it (its client left), as at a deadline
    abandon: Callable[[], None] | None = None
    # Knative with an app (blackbox http mode): the aiohttp request to relay as it came, and the
    # response the app's answer was streamed into
    forward: Any = None
    response: Any = None

    def wire_parts(self) -> tuple[bytes | memoryview, ...]:
        """The request as forwarded: the body, with the trace's fields appended to its object
        (the body itself is not copied)."""
        if self.trace is None:
            return (self.body,)
        end = self.body.rfind(b"}")  # the object's end: only whitespace may follow it
        return memoryview(self.body)[:end], self.trace.members(first=not self.request) + b"}"

    def wire_body(self) -> bytes:
        return b"".join(self.wire_parts())

    def context(self) -> dict:
        """The request's top-level fields with the trace's: what executables get as `__OW_*`."""
        request = dict(self.request or {})
        if self.trace is not None:
            request["traceparent"] = self.trace.traceparent
            if self.trace.state:
                request["tracestate"] = self.trace.state
        return request
