"""Apps under one API: a blackbox `exec` that is a web server of its own (Flask, Express, a Go
binary: any language), in `http` mode (ACTIONPROXY_BLACKBOX_MODE=http).

The proxy starts `exec` with PORT set to a free loopback port, waits until it answers an HTTP
request (any status) on ACTIONPROXY_APP_READY_PATH, and forwards each activation to it:
OpenWhisk's `/run` as a POST of the parameters as JSON to ACTIONPROXY_APP_PATH (a JSON object
or array in a 2xx answer is the result, anything else an error naming what came), Knative's
requests as they came, streamed both ways. The app's stdout and stderr go to the container
log (a server's output belongs to no one activation). The proxy's own parts hold as for any
action: deadlines (a forward is cut at its activation's deadline), metrics, the memory guard
(the app and what it starts), the drain, and health. An app that ends is started again; what
was in flight with it fails with `command exited`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Callable

import orjson

from actionproxy import errors
from actionproxy.activation import Activation, ActivationResult
from actionproxy.archive import ActionSource
from actionproxy.diagnostics import log, trace_lifetime
from actionproxy.executor import InitError
from actionproxy.executor.executables import child_env
from actionproxy.executor.fdio import FdReader
from actionproxy.executor.options import AppOptions
from actionproxy.executor.process import Abortable, ProcessHandle, free_port, spawn_plain

HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "transfer-encoding", "upgrade"))  # not relayed; Content-Length is, as known
POLL = 0.02  # seconds between looks while the app starts


class App(Abortable):
    """The running server process, on its port: what the memory guard watches and may abort."""

    def __init__(self, process: ProcessHandle, port: int) -> None:
        super().__init__(process)
        self.port = port


class HttpAppExecutor:
    def __init__(self, options: AppOptions, passthrough: Callable[[bool, bytes], None]) -> None:
        self._options = options
        self._passthrough = passthrough
        self._argv: list[str] = []
        self._cwd = ""
        self._env: dict[str, str] = {}
        self._app: App | None = None
        self._starting: asyncio.Future[App] | None = None
        self._session: Any = None  # aiohttp.ClientSession, imported with the first app
        self._closed = False
        self.restarts = 0

    async def init(self, source: ActionSource, env: dict[str, str]) -> None:
        self._argv = [str(source.root / source.entry)]
        self._cwd = str(source.root)
        self._env = child_env(env, False)
        try:
            await self._app_up()
        except (OSError, RuntimeError) as exc:
            raise InitError("start", f"cannot start the app: {exc}") from None

    async def _app_up(self) -> App:
        """The app, started (again) if it is not running; one start however many wait."""
        if self._app is not None and self._app.process.alive:
            return self._app
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        try:
            return await asyncio.shield(self._starting)
        finally:
            if self._starting is not None and self._starting.done():
                self._starting = None

    async def _start(self) -> App:
        import aiohttp  # the client: only an app needs it

        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False, connector=aiohttp.TCPConnector(limit=0))
        loop = asyncio.get_running_loop()
        port = free_port()
        child = spawn_plain(self._argv, {**self._env, "PORT": str(port)}, self._cwd)
        handle = ProcessHandle(loop, child.pid, own_child=True)
        trace_lifetime("app", child.pid, handle.exited)
        for fd, is_err in ((child.stdout, False), (child.stderr, True)):
            FdReader(loop, fd, lambda data, is_err=is_err: self._passthrough(is_err, data), lambda: None)
        app = App(handle, port)
        handle.exited.add_done_callback(lambda _: self._ended(app))
        limit = time.monotonic() + self._options.start_seconds
        while True:
            if not handle.alive:
                raise RuntimeError(f"it ended before it answered ({handle.exited.result()})")
            if time.monotonic() > limit:
                handle.kill()
                raise RuntimeError(f"it did not answer on port {port} within {self._options.start_seconds:g} s "
                                   f"(it must listen on $PORT)")
            try:
                async with self._session.get(self._url(app, self._options.ready_path),
                                             timeout=aiohttp.ClientTimeout(total=1)) as response:
                    await response.read()
                break
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(POLL)
        self._app = app
        return app

    def _ended(self, app: App) -> None:
        if self._closed or app is not self._app:
            return
        self.restarts += 1
        log.warning(f"the app (pid {app.pid}) ended ({app.process.exited.result()}); it is started again "
                    f"for the next activation")

    @staticmethod
    def _url(app: App, path: str) -> str:
        return f"http://127.0.0.1:{app.port}{path}"

    def _failed(self, app: App | None, exc: BaseException) -> ActivationResult:
        if app is not None and app.verdict is not None:
            return errors.error(502, app.verdict)
        detail = app.process.exited.result() if app is not None and app.process.exited.done() else str(exc) or repr(exc)
        return errors.command_exited(f"the app: {detail}")

    def _timeout(self, activation: Activation) -> Any:
        import aiohttp

        if activation.deadline is None:
            return aiohttp.ClientTimeout(total=None)
        return aiohttp.ClientTimeout(total=max(0.0, activation.deadline - asyncio.get_running_loop().time()))

    async def run(self, activation: Activation) -> ActivationResult:
        if self._closed:
            return errors.shutting_down()
        if activation.deadline is not None and activation.deadline <= asyncio.get_running_loop().time():
            return errors.deadline_passed(killed=False)
        if activation.forward is not None:
            return await self._relay(activation)
        import aiohttp

        app: App | None = None
        request = activation.context()
        headers = {"Content-Type": "application/json", "X-OW-Activation-Id": activation.activation_id}
        if activation.trace is not None:
            headers["traceparent"] = activation.trace.traceparent
        try:
            app = await self._app_up()
            async with self._session.post(self._url(app, self._options.path), headers=headers,
                                          data=orjson.dumps(request.get("value", {})),
                                          timeout=self._timeout(activation)) as response:
                body = await response.read()
                status = response.status
        except asyncio.TimeoutError:
            return errors.deadline_passed(killed=False)
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            return self._failed(app, exc)
        return _result(status, body)

    async def _relay(self, activation: Activation) -> ActivationResult:
        """Knative: the request as it came to the app, its answer as it comes to the client."""
        import aiohttp
        from aiohttp import web

        request: web.Request = activation.forward
        app: App | None = None
        # Expect: 100-continue was the proxy's to answer (aiohttp did); the app gets the body at once
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in HOP_BY_HOP and name.lower() != "expect"}
        if activation.trace is not None:
            headers["traceparent"] = activation.trace.traceparent
        try:
            app = await self._app_up()
            body = request.content.iter_chunked(1 << 16) if request.body_exists else None
            async with self._session.request(request.method, self._url(app, request.path_qs), headers=headers,
                                             data=body, timeout=self._timeout(activation),
                                             allow_redirects=False) as answer:
                response = web.StreamResponse(status=answer.status, reason=answer.reason, headers={
                    name: value for name, value in answer.headers.items()
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"})
                if answer.content_length is not None:
                    response.content_length = answer.content_length
                activation.response = response
                await response.prepare(request)
                async for chunk in answer.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return ActivationResult(200 if answer.status < 500 else 502, b"{}")
        except asyncio.TimeoutError:
            return errors.deadline_passed(killed=False)
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            return self._failed(app, exc)

    def watched(self) -> list[App]:
        return [self._app] if self._app is not None and self._app.process.alive else []

    def close(self) -> None:
        self._closed = True
        if self._app is not None:
            self._app.process.kill()
        if self._session is not None:
            asyncio.ensure_future(self._session.close())


def _result(status: int, body: bytes) -> ActivationResult:
    """A 2xx answer holding a JSON object or array is the result; anything else is named."""
    if not 200 <= status < 300:
        return errors.error(502, f"The app answered {status}: {body[:200].decode('utf-8', 'replace')}")
    stripped = body.strip()
    if stripped[:1] in (b"{", b"["):
        try:
            orjson.loads(stripped)
            return ActivationResult(200, stripped)
        except orjson.JSONDecodeError:
            pass
    return errors.not_a_dict()
