"""How many activations a forked `def main` worker may hold at once, from how long its runs take.

A worker runs its activations one after another. Handing it several at a time (they wait in
its socket, in order) lets it run them on one wake-up instead of one wake-up and two context
switches each, which is most of what a fast function costs on a small container. The price is
that those behind a run wait for it; so a worker gets as many as it runs in QUEUE_BUDGET at
the pace its workers report (TIME frames, docs/PROTOCOL.md 3.11), and one at a time while any
run among the last SLOW_MEMORY was slower than the budget; and none joins a worker whose
current run has gone on for JOIN_WITHIN, so a run that turns slow gathers no queue while it
lasts. A function that takes a second gets one at a time, as it would without any of this.
"""

from __future__ import annotations

QUEUE_BUDGET = 0.002  # seconds of work queued behind a worker's current run, at the usual pace
MAX_DEPTH = 32
JOIN_WITHIN = 0.01  # seconds: a worker whose current run is older takes no more for now
SLOW_MEMORY = 64  # runs after a slow one before a worker may hold more than one again
WEIGHT = 0.1  # of the newest run in the moving mean


class Pace:
    """The moving mean of the action's run times, shared by the workers of one pool."""

    def __init__(self) -> None:
        self.mean = QUEUE_BUDGET  # unknown: one at a time until runs are seen
        self.depth = 1  # read on every dispatch, so worked out once per run seen
        self._calm = 0  # fast runs still to see after the last slow one

    def observe(self, seconds: float) -> None:
        if seconds > QUEUE_BUDGET:
            self._calm = SLOW_MEMORY
        elif self._calm:
            self._calm -= 1
        self.mean += (seconds - self.mean) * WEIGHT
        fits = int(QUEUE_BUDGET / max(self.mean, 1e-7))
        self.depth = 1 if self._calm else max(1, min(MAX_DEPTH, fits))
