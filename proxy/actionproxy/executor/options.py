"""What each executor needs to know, and nothing more: the runner builds these from the Config,
so an executor can be read (and built in a test) without the whole configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from actionproxy.executor.process import SpawnedProcess


@dataclass(frozen=True)
class Limits:
    """Shared by every executor."""

    log_bytes: int  # log bytes kept per activation (ACTIONPROXY_LOG_LIMIT)
    processes: int  # most processes at once (ACTIONPROXY_MAX_WORKERS)
    cancel_grace: float  # seconds a cancelled activation may take before its process is killed


@dataclass(frozen=True)
class LauncherOptions:
    limits: Limits
    launchers: int  # async launchers sharing the work (ACTIONPROXY_LAUNCHERS); 1 in debug mode
    start: Callable[[str], SpawnedProcess]  # starts a stem-cell launcher given the worker socket


@dataclass(frozen=True)
class ExecutableOptions:
    limits: Limits
    wait_for_ack: bool  # OW_WAIT_FOR_ACK: the executable acks before its first request


@dataclass(frozen=True)
class OneshotOptions:
    limits: Limits
    max_line: int  # longest stdout line read, the result among them (ACTIONPROXY_MAX_BODY)


@dataclass(frozen=True)
class AppOptions:
    path: str  # where an OpenWhisk activation's parameters are POSTed (ACTIONPROXY_APP_PATH)
    ready_path: str  # asked until the app answers, at its start (ACTIONPROXY_APP_READY_PATH)
    start_seconds: float  # how long the app may take to answer at its start (ACTIONPROXY_APP_START_SECONDS)
