"""The loaded action as the platforms see it: init once, run many, logs out in blocks.

Platform modules (OpenWhisk, Knative) turn HTTP into calls here; executors do the work.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import base64
import binascii
import itertools
import os
import shutil
import time

from actionproxy import errors
from actionproxy.diagnostics import log, route_to
from actionproxy.activation import Activation, ActivationResult
from actionproxy.archive import EXECUTABLE, ActionSource, ArchiveError, ArchiveTooLarge, materialize
from actionproxy.config import Config
from actionproxy.envvars import first_unexportable
from actionproxy.executor import Executor, InitError
from actionproxy.executor.languages import LauncherExecutor
from actionproxy.executor.executables import ExecutableExecutor
from actionproxy.executor.memory import MemoryGuard, Watched
from actionproxy.executor.oneshot import OneshotExecutor
from actionproxy.executor.httpapp import HttpAppExecutor
from actionproxy.executor.options import AppOptions, ExecutableOptions, LauncherOptions, Limits, OneshotOptions
from actionproxy.executor.process import SpawnedProcess
from actionproxy.executor.stemcell import spawn_stem_cell
from actionproxy.logs import LogWriter
from actionproxy.metrics import ProxyMetrics, outcome

BLACKBOX_MODE_KEY = "ACTIONPROXY_BLACKBOX_MODE"


class Load(enum.Enum):
    """Where the action is: one value in place of flags, read by the platforms and health."""

    STARTING = "starting"  # the action baked into the image is loading (no /init will come)
    EMPTY = "empty"  # waiting for /init (a blackbox runs its pre-installed executable meanwhile)
    LOADING = "loading"  # an /init is loading it
    LOADED = "loaded"  # loaded: /init is refused from now on


class Lifetime(enum.Enum):
    SERVING = "serving"
    DRAINING = "draining"  # after SIGTERM: in-flight work finishes, new work gets 503
    STOPPED = "stopped"  # the drain period ended: what still runs was stopped
    CLOSED = "closed"  # every process of the action is gone


class ActionRunner:
    def __init__(self, config: Config, stem: SpawnedProcess | None = None,
                 socket_path: str | None = None) -> None:
        self.config = config
        self.started_ms = time.time() * 1000  # a deadline before this came from no platform that started us
        self.logs = LogWriter(config.log_format, config.log_limit)
        route_to(lambda data: self.logs.raw(True, data))  # diagnostics in order with the log blocks
        limits = Limits(config.log_limit, config.max_workers, config.cancel_grace)
        self._launcher = LauncherExecutor(
            LauncherOptions(limits, 1 if config.debug else config.launchers,  # one debugger port
                            functools.partial(spawn_stem_cell, config)),
            self.passthrough, stem, socket_path)
        self._executable_options = ExecutableOptions(limits, config.wait_for_ack)
        self._oneshot_options = OneshotOptions(limits, config.max_body)
        self._app_options = AppOptions(config.app_path, config.app_ready_path, config.app_start_seconds)
        self.executor: Executor | None = None
        self.dedicated = config.autoinit is not None  # the action is baked into the image
        self.load = Load.STARTING if self.dedicated else Load.EMPTY
        self.lifetime = Lifetime.SERVING
        self._started = asyncio.Event()
        self._preinstalling: asyncio.Future[Executor] | None = None
        self._attempts = itertools.count(1)
        self.inflight = 0
        self.memory: MemoryGuard | None = None
        self.metrics = ProxyMetrics()
        self.spans = None  # an OTLP span exporter, only when a collector is named
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            from actionproxy import otlp

            self.spans = otlp.from_env(dict(os.environ))

    def finish_starting(self) -> None:
        if self.load is Load.STARTING:  # a failed load leaves it EMPTY (the process then exits)
            self.load = Load.EMPTY
        self._started.set()
        self.metrics.mark_ready()

    @property
    def ready(self) -> bool:
        """Can run: initialized, or a blackbox with its pre-installed (or stub) executable."""
        return self.executor is not None or self.config.runtime == "blackbox"

    @property
    def starting(self) -> bool:
        return self.load is Load.STARTING

    @property
    def draining(self) -> bool:
        return self.lifetime is not Lifetime.SERVING

    def drain(self) -> None:
        if self.lifetime is Lifetime.SERVING:
            self.lifetime = Lifetime.DRAINING

    @property
    def idle(self) -> bool:
        """Nothing taken on is still under way: no activation, /init, or start-up load."""
        return not (self.inflight or self.load in (Load.STARTING, Load.LOADING)
                    or (self._preinstalling is not None and not self._preinstalling.done()))

    @property
    def launcher_restarts(self) -> int:
        executors = {id(e): e for e in (self._launcher, self.executor) if e is not None}
        return sum(e.restarts for e in executors.values())

    @property
    def memory_kills(self) -> int:
        return self.memory.kills if self.memory is not None else 0

    def passthrough(self, is_err: bool, data: bytes) -> None:
        """Output that belongs to no activation goes to the container log as it comes."""
        self.logs.raw(is_err, data)

    async def init(self, code: str | None, binary: bool, main: str, env: dict[str, str],
                   at_start: bool = False) -> ActivationResult:
        """/init, or with `at_start` the load of the action baked into the image."""
        if self.draining:
            return errors.shutting_down()
        if self.load is not (Load.STARTING if at_start else Load.EMPTY):
            self.logs.proxy_error(errors.REINIT, sentinels=False)
            return errors.error(403, errors.REINIT)
        unexportable = first_unexportable(env)
        if unexportable is not None:  # every runtime exports init env before the code loads
            return errors.unexportable_init_env(unexportable)
        if not code:
            if self.config.runtime != "blackbox":
                return errors.error(403, errors.MISSING_CODE)
            self.load = Load.LOADED  # the skeleton's rule: no code keeps the pre-installed exec
            return ActivationResult(200, b'{"ok":true}')
        if not at_start:  # at start it stays STARTING: health says so until the load is done
            self.load = Load.LOADING
        started = time.perf_counter()
        try:
            result = await self._init(code, binary, main, env, at_start)
        finally:
            if not at_start:
                self.load = Load.EMPTY
        self.metrics.init_seconds = time.perf_counter() - started
        log.debug("init (main %r, %s, %d chars): %d in %.1f ms", main, "binary" if binary else "source",
                  len(code), result.status, self.metrics.init_seconds * 1000)
        if result.status == 200:
            self.load = Load.LOADED
        return result

    async def _init(self, code: str, binary: bool, main: str, env: dict[str, str],
                    at_start: bool) -> ActivationResult:
        if binary:
            try:
                data = base64.b64decode(code, validate=False)
            except (binascii.Error, ValueError) as exc:
                return errors.cannot_decode(exc)
        else:
            data = code.encode("utf-8")
        dest = self.config.action_dir / str(next(self._attempts))
        while dest.exists():
            dest = self.config.action_dir / str(next(self._attempts))
        try:
            source = await asyncio.to_thread(
                materialize, data, main, dest, self.config.archive, self.config.runtime)
            executor = self._executor_for(source, env)
            await executor.init(source, env)
        except (ArchiveError, InitError) as exc:  # nothing runs from the folder: it goes
            await asyncio.to_thread(shutil.rmtree, dest, True)
            if isinstance(exc, ArchiveTooLarge):
                self.logs.proxy_error(str(exc), sentinels=not at_start)
                return errors.error(413, str(exc))
            return self._init_failed(exc if isinstance(exc, InitError) else InitError("compile", str(exc)),
                                     at_start)
        self.executor = executor
        self._guard_memory()
        return ActivationResult(200, b'{"ok":true}')

    def _watched(self) -> list[Watched]:
        return list(self.executor.watched()) if self.executor is not None else []

    def _guard_memory(self) -> None:
        if self.config.memory_limit and self.memory is None:
            self.memory = MemoryGuard(self.config.memory_limit, self._watched)
            self.memory.start()

    def _executor_for(self, source: ActionSource, env: dict[str, str]) -> Executor:
        """Launcher code -> the language launcher; a program -> action-loop processes, except
        in blackbox, where it runs once per activation unless the action-loop mode or the app
        mode is chosen (ACTIONPROXY_BLACKBOX_MODE=loop or http in the container's or the
        action's init env)."""
        if source.kind == "launcher":
            return self._launcher
        mode = env.get(BLACKBOX_MODE_KEY, self.config.blackbox_mode)
        if self.config.runtime == "blackbox" and mode == "http":
            return HttpAppExecutor(self._app_options, self.passthrough)
        if self.config.runtime == "blackbox" and mode != "loop":
            return OneshotExecutor(self._oneshot_options, self.passthrough)
        return ExecutableExecutor(self._executable_options, self.passthrough)

    async def _preinstalled(self) -> Executor:
        """Blackbox before any code: the pre-installed `exec` (ACTIONPROXY_EXEC, where an image
        built FROM ours puts it), else the stub that says how to replace it (a one-shot script,
        whatever the mode)."""
        exe = self.config.preinstalled_exec
        preinstalled = exe.is_file()
        if not preinstalled:
            exe = self.config.runtimes_dir / "blackbox" / EXECUTABLE
        source = ActionSource("executable", exe.parent, exe.name, "main")
        executor = (self._executor_for(source, {}) if preinstalled
                    else OneshotExecutor(self._oneshot_options, self.passthrough))
        await executor.init(source, {})
        return executor

    def _init_failed(self, exc: InitError, at_start: bool = False) -> ActivationResult:
        """The contract's wording over HTTP, the detail in the log. The baked-in action's load
        at start-up is no activation: its detail is the answer, with no sentinel lines."""
        if at_start:
            said = "its code does not load" if exc.kind == "compile" else "it does not start"
            return errors.error(502, exc.detail or f"{said} (the error is above)")
        message = errors.COMPILE_FAILED if exc.kind == "compile" else errors.START_FAILED
        self.logs.proxy_error(exc.detail, sentinels=True)
        return errors.error(502, message)

    async def run(self, activation: Activation) -> ActivationResult:
        if self.draining:  # SIGTERM: what runs finishes, nothing new starts
            return self.metrics.count(errors.shutting_down())
        if self.starting:  # the baked-in action is still loading: wait for it
            await self._started.wait()
        if self.executor is None:
            if not self.ready:
                return self.metrics.count(errors.not_initialized())
            if self._preinstalling is None:  # one start, however many activations wait for it
                self._preinstalling = asyncio.ensure_future(self._preinstalled())
            try:
                executor = await asyncio.shield(self._preinstalling)
            except InitError as exc:
                self._preinstalling = None
                return self.metrics.count(self._init_failed(exc))
            if self.executor is None:
                self.executor = executor
                self._guard_memory()
        if self.inflight >= self.config.max_concurrent:
            return self.metrics.count(errors.too_many(self.config.max_concurrent))
        self.inflight += 1
        started = time.perf_counter()
        started_ns = time.time_ns() if self.spans is not None else 0
        log.debug("activation %s started (%d in flight)", activation.activation_id or "-", self.inflight)
        try:
            result = await self.executor.run(activation)
        except Exception as exc:  # a bug of ours: answer in the contract's shape, keep serving
            log.exception("internal error")
            result = errors.error(500, f"Internal error: {exc!r}")
        finally:
            self.inflight -= 1
        if self.lifetime in (Lifetime.STOPPED, Lifetime.CLOSED) and result.status != 200:  # still running at the end of the drain
            result = errors.stopped_at_shutdown(self.config.drain_seconds)
        seconds = time.perf_counter() - started
        self.metrics.activation(result, seconds)
        log.debug("activation %s ended: %d in %.1f ms", activation.activation_id or "-", result.status,
                  seconds * 1000)  # arguments, not an f-string: formatted only when debug is on
        self.logs.activation(activation.logs, activation.activation_id, activation.trace)
        if self.spans is not None and activation.trace is not None:
            self.spans.add(activation.trace, activation.activation_id, started_ns, time.time_ns(), result.status,
                           outcome(result) != "success")
        return result

    def stop(self) -> int:
        """The drain period is over: stop what still runs (its activations get the shutdown
        error) and start nothing new. Returns how many activations were stopped."""
        stopping = self.inflight
        self.lifetime = Lifetime.STOPPED
        self.close()
        return stopping

    def close(self) -> None:
        if self.lifetime is Lifetime.CLOSED:
            self.logs.flush()
            return
        self.lifetime = Lifetime.CLOSED
        if self.executor is not None:
            self.executor.close()
        if self.executor is not self._launcher:
            self._launcher.close()
        if self.memory is not None:
            self.memory.stop()
        if self.spans is not None:
            self.spans.close()
        self.logs.flush()
