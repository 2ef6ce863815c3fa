"""One activation: the request as received, its context, its deadline, and what it produced."""

from __future__ import annotations

from dataclasses import dataclass, field

from actionproxy.logs import ActivationLogs


@dataclass(frozen=True)
class ActivationResult:
    """The HTTP status and JSON body the platform gets back."""

    status: int
    body: bytes


@dataclass
class Activation:
    """A `/run` request after validation; `body` is forwarded to the launcher untouched."""

    body: bytes
    activation_id: str
    deadline: float | None  # loop time (monotonic seconds) by which it must finish
    request: dict | None = None  # the parsed body, for executors that need its fields
    logs: ActivationLogs = field(default_factory=ActivationLogs)
