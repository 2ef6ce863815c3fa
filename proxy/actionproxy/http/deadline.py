"""An activation's `deadline`, read the same way on both platforms: epoch milliseconds, a number
or a string of one, as OpenWhisk's invoker sends it and a Knative envelope may carry it."""

from __future__ import annotations

import asyncio
import math
import time

from actionproxy import errors
from actionproxy.activation import ActivationResult


class Deadlines:
    def __init__(self, started_ms: float) -> None:
        """started_ms: when this proxy started (epoch ms), the same for every server that reads
        deadlines in this process (the plain requests' server and aiohttp's routes)."""
        self._started_ms = started_ms

    def parse(self, raw: object) -> float | None | ActivationResult:
        """Loop time, None for no deadline, or the 400 for a value that is not one. A deadline
        from before this proxy started cannot come from a platform that started it (OpenWhisk's
        own test suite sends "123"), so it is not enforced; a later one that has passed is."""
        if raw is None or raw == "":
            return None
        try:
            epoch_ms = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            epoch_ms = math.nan
        if not math.isfinite(epoch_ms):
            return errors.error(400, f"The deadline must be epoch milliseconds, not {raw!r}.")
        if epoch_ms < self._started_ms:
            return None
        return asyncio.get_running_loop().time() + (epoch_ms - time.time() * 1000) / 1000
