"""The container's life as its platform sees it: health, readiness, metrics, and the drain at
SIGTERM. Routes for both platforms, on the serving port.

- `GET /healthz`: 200 when the proxy takes work (it can run the action, or, with no action
  baked in, it can take `/init`); 503 with the reason while the baked-in action is still
  loading ("starting"), after SIGTERM ("draining"), and at the in-flight cap ("full").
- `GET /readyz`: 200 when an activation can run now: as /healthz, and 503 "not initialized"
  before an action is loaded.
- `GET /livez`: 200 while the proxy's event loop answers at all, busy, starting or draining
  included: the liveness probe, which must not restart a container for being full.
- `GET /metrics`: Prometheus text (proxy/metrics.py).

The drain: SIGTERM (or SIGINT) turns the runner to draining at once (health 503, new work
503), keeps the listener open while in-flight activations finish (each still bounded by its
own deadline) or until ACTIONPROXY_DRAIN_SECONDS pass, stops what is still running then,
and only then lets aiohttp close the listener and shut down (its shutdown_timeout, set to the
same period, covers handlers still writing their answers). A second signal ends the wait.
"""

from __future__ import annotations

import asyncio
import signal

from aiohttp import web

from actionproxy.diagnostics import log
from actionproxy.http.contract import HEALTH_PATHS, health
from actionproxy.metrics import CONTENT_TYPE
from actionproxy.http.openwhisk import respond
from actionproxy.runner import ActionRunner

DRAIN_POLL = 0.02  # seconds between looks at what is still in flight during a drain


def health_routes(runner: ActionRunner) -> list[web.RouteDef]:
    async def probe(request: web.Request) -> web.Response:
        return respond(health(runner, request.path))

    async def metrics(_: web.Request) -> web.Response:
        body = runner.metrics.render(runner.inflight, runner.launcher_restarts, runner.memory_kills)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return [*(web.get(path, probe) for path in HEALTH_PATHS), web.get("/metrics", metrics)]


def _raise_graceful_exit() -> None:
    raise web.GracefulExit()  # what aiohttp's own signal handler raises: run_app then shuts down


class Drain:
    """Owns SIGTERM and SIGINT (serve() runs aiohttp with handle_signals=False)."""

    def __init__(self, runner: ActionRunner, seconds: float) -> None:
        self.runner = runner
        self.seconds = seconds
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()

    async def on_startup(self, _: web.Application) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.begin, sig)
        if not self.runner.starting:  # else the start-up load marks it when it is done
            self.runner.metrics.mark_ready()

    def begin(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self._task is not None:
            log.info(f"{sig.name} again: ending the drain now")
            self._hurry.set()
            return
        self.runner.drain()
        log.info(f"{sig.name}: draining: {self.runner.inflight} activation(s) in flight, no new work taken; "
             f"waiting up to {self.seconds:g} s")
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self.seconds
        while not self.runner.idle and loop.time() < end and not self._hurry.is_set():
            await asyncio.sleep(DRAIN_POLL)
        if self.runner.idle:
            log.info("drained: nothing in flight; shutting down")
        else:
            stopped = self.runner.stop()
            log.info(f"the drain period is over with {stopped} activation(s) still running: they were "
                 f"stopped and answered with an error; shutting down")
        self.runner.logs.flush()
        loop.call_soon(_raise_graceful_exit)
