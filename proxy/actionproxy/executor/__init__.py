"""Executors run activations in processes; they know nothing about HTTP or platforms.

Each executor loads one action (`init`), then runs activations (`run`) until `close`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable, Protocol

if TYPE_CHECKING:  # the stem cell is spawned through this package before anything heavy loads
    from actionproxy.activation import Activation, ActivationResult
    from actionproxy.archive import ActionSource
    from actionproxy.executor.memory import Watched


class InitError(Exception):
    """The action could not be loaded. kind: 'compile' (bad code) or 'start' (would not run)."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class Executor(Protocol):
    async def init(self, source: ActionSource, env: dict[str, str]) -> None: ...

    async def run(self, activation: Activation) -> ActivationResult: ...

    def watched(self) -> Iterable[Watched]: ...

    @property
    def restarts(self) -> int:
        """How many times a launcher (or multiplexing executable) was started again after it ended."""
        ...

    def close(self) -> None: ...
