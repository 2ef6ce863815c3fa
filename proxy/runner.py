"""The loaded action as the platforms see it: init once, run many, logs out in blocks.

Platform modules (OpenWhisk today) turn HTTP into calls here; executors do the work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import shutil
import traceback

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.archive import ArchiveError, materialize
from actionproxy.config import Config
from actionproxy.executor import Executor, InitError
from actionproxy.executor.launcher import LauncherExecutor
from actionproxy.executor.loop import ExecutableExecutor
from actionproxy.executor.process import SpawnedProcess
from actionproxy.logs import LogWriter


class ActionRunner:
    def __init__(self, config: Config, stem: SpawnedProcess | None = None,
                 socket_path: str | None = None) -> None:
        self.config = config
        self.logs = LogWriter(config.log_format, config.log_limit)
        self._launcher = LauncherExecutor(config, self.passthrough, stem, socket_path)
        self.executor: Executor | None = None
        self._initializing = False
        self._attempts = itertools.count(1)
        self.inflight = 0

    @property
    def initialized(self) -> bool:
        return self.executor is not None

    def passthrough(self, is_err: bool, data: bytes) -> None:
        """Output that belongs to no activation goes to the container log as it comes."""
        self.logs.raw(is_err, data)

    async def init(self, code: str, binary: bool, main: str, env: dict[str, str]) -> ActivationResult:
        if self.executor is not None or self._initializing:
            self.logs.proxy_error(errors.REINIT, sentinels=False)
            return errors.error(403, errors.REINIT)
        self._initializing = True
        try:
            return await self._init(code, binary, main, env)
        finally:
            self._initializing = False

    async def _init(self, code: str, binary: bool, main: str, env: dict[str, str]) -> ActivationResult:
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
            source = await asyncio.to_thread(materialize, data, main, dest, self.config.max_archive)
        except ArchiveError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            return self._init_failed(InitError("compile", str(exc)))
        executor: Executor = self._launcher if source.kind == "python" else ExecutableExecutor(
            self.config, self.passthrough)
        try:
            await executor.init(source, env)
        except InitError as exc:
            return self._init_failed(exc)
        self.executor = executor
        return ActivationResult(200, b'{"ok":true}')

    def _init_failed(self, exc: InitError) -> ActivationResult:
        message = errors.COMPILE_FAILED if exc.kind == "compile" else errors.START_FAILED
        self.logs.proxy_error(exc.detail, sentinels=True)
        return errors.error(502, message)

    async def run(self, activation: Activation) -> ActivationResult:
        if self.executor is None:
            return errors.not_initialized()
        if self.inflight >= self.config.max_concurrent:
            return errors.too_many(self.config.max_concurrent)
        self.inflight += 1
        try:
            result = await self.executor.run(activation)
        except Exception as exc:  # a bug of ours: answer in the contract's shape, keep serving
            traceback.print_exc()
            result = errors.error(500, f"Internal error: {exc!r}")
        finally:
            self.inflight -= 1
        self.logs.activation(activation.logs, activation.activation_id)
        return result

    def close(self) -> None:
        if self.executor is not None:
            self.executor.close()
        if self.executor is not self._launcher:
            self._launcher.close()
        self.logs.flush()
