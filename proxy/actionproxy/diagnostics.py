"""The proxy's own diagnostics: one `logging` logger, "actionproxy", as servers such as uvicorn
keep one for theirs. Lines read "actionproxy: <message>" ("actionproxy: debug: ..." at debug
level, which ACTIONPROXY_DEBUG turns on). Until the runner exists they go straight to stderr;
then through its log writer, so that they stay in order with the activations' log blocks.
The activations' own output is not a diagnostic: it is framed by actionproxy.logs."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("actionproxy")


class _Sink(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.write: Callable[[bytes], None] = lambda data: os.write(2, data) and None
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = "debug: " if record.levelno <= logging.DEBUG else ""
            self.write(f"actionproxy: {level}{self.format(record)}\n".encode())
        except Exception:  # noqa: BLE001 - logging's own convention for a failing handler
            self.handleError(record)


_sink = _Sink()
log.addHandler(_sink)
log.propagate = False
log.setLevel(logging.INFO)


def route_to(write: Callable[[bytes], None]) -> None:
    """Where the lines go from now on (the runner's log writer)."""
    _sink.write = write


def set_debug(on: bool) -> None:
    log.setLevel(logging.DEBUG if on else logging.INFO)


def trace_lifetime(what: str, pid: int, dead: asyncio.Future[str]) -> None:
    """At debug level: a process of the action started, and how it ended."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(f"{what} pid {pid} started")
        dead.add_done_callback(lambda ended: log.debug(f"{what} pid {pid} ended: {ended.result()}"))
