"""actionproxy Python launcher: runs user functions for the proxy over action-loop protocol v2.

Life of the process (docs/PROTOCOL.md has the wire format):
1. stem cell: start, import only the standard library, write the ack line
   `{"ok": true, "protocol": 2}` on fd 3, then wait for an INIT frame on stdin;
2. load the user's code (env exported first), answer INIT_DONE with the mode:
   - "async" (`async def main`): activations run as tasks on this process's event loop;
   - "sync" (`def main`): this process becomes a zygote and forks one worker per FORK frame;
     each worker connects to the proxy's Unix socket and runs one activation at a time, taking
     the RUNs the proxy queued for it in turn (INIT_DONE says "pipeline": the proxy may queue
     several) and reporting each run's duration in a TIME frame.

Output written through sys.stdout/sys.stderr inside an activation is attributed to it
(contextvars) and framed with its id; output outside any activation goes to fd 1/2 as is.
This file must stay standard-library only: it runs under whatever python3 the image has.
"""

from __future__ import annotations

import contextvars
import importlib.util
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    import asyncio

try:
    import orjson
    parse_json = orjson.loads
except ImportError:
    orjson = None
    parse_json = json.loads

HEADER = struct.Struct(">BII")
MICROSECONDS = struct.Struct(">I")
TRACE_FIELDS = ("traceparent", "tracestate")
READ_CHUNK = 256 * 1024
INIT, RUN, CANCEL, FORK = ord("I"), ord("R"), ord("C"), ord("F")
INIT_DONE, DONE, FAILED, STDOUT, STDERR = ord("K"), ord("D"), ord("X"), ord("O"), ord("E")
WORKER_EXIT, CHUNK, TIME = ord("W"), ord("S"), ord("T")
LOG_FLUSH_BYTES = 64 * 1024
ENTRY_MODULE = "main__"
WORKER_SOCKET = ""


class Activation:
    """What one running activation owns: its id, its `__OW_*` values and its pending logs."""

    __slots__ = ("ident", "env", "out", "err", "size", "started")

    def __init__(self, ident: int, env: dict[str, str]) -> None:
        self.started = time.perf_counter()
        self.ident = ident
        self.env = env
        self.out: list[str] = []
        self.err: list[str] = []
        self.size = 0


current: contextvars.ContextVar[Activation | None] = contextvars.ContextVar(
    "activation", default=None)


class FrameChannel:
    """Writes frames to the proxy; safe to call from threads the user's code starts.

    Once an event loop serves activations (async mode), frames written on the loop's thread
    are gathered and leave in one write per loop pass: fewer wake-ups of the proxy.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._batch: list[bytes] = []

    def batch_on(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def send(self, *frames: tuple[int, int, bytes], last: bool = False) -> None:
        """`last`: nothing else is running, so nothing else will join this write."""
        data = b"".join(HEADER.pack(k, i, len(p)) + p for k, i, p in frames)
        with self._lock:
            if (self._loop is not None and not last
                    and threading.get_ident() == self._loop_thread):
                if not self._batch:
                    self._loop.call_soon(self.flush)
                self._batch.append(data)
                return
            if self._batch:  # keep the order: what the loop gathered goes first
                data = b"".join(self._batch) + data
                self._batch = []
            self._write_all(data)

    def flush(self) -> None:
        with self._lock:
            batch, self._batch = self._batch, []
            if batch:
                self._write_all(b"".join(batch))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def flush_logs(self, activation: Activation) -> list[tuple[int, int, bytes]]:
        frames = []
        if activation.out:
            frames.append((STDOUT, activation.ident, "".join(activation.out).encode("utf-8", "replace")))
            activation.out.clear()
        if activation.err:
            frames.append((STDERR, activation.ident, "".join(activation.err).encode("utf-8", "replace")))
            activation.err.clear()
        activation.size = 0
        return frames


class FrameReader:
    """Reads frames from a fd, blocking or fed by an event loop, with one shared buffer."""

    def __init__(self, fd: int, sock: socket.socket | None = None) -> None:
        self.fd = fd
        self.sock = sock  # a worker's connection: read without waiting too (poll)
        self.buf = bytearray()
        self._chunk = bytearray(READ_CHUNK)  # reused: no fresh allocation per read
        self._view = memoryview(self._chunk)

    def parse(self) -> Iterator[tuple[int, int, bytes]]:
        """The whole frames buffered; what the caller did not take stays (it may stop at INIT)."""
        buf = self.buf
        start = 0
        try:
            while len(buf) - start >= HEADER.size:
                kind, ident, length = HEADER.unpack_from(buf, start)
                end = start + HEADER.size + length
                if len(buf) < end:
                    return
                with memoryview(buf) as view:  # one copy of the payload (a bytearray slice is another)
                    payload = bytes(view[start + HEADER.size:end])
                start = end
                yield kind, ident, payload
        finally:
            del buf[:start]

    def feed(self) -> bool:
        """Read once; False at EOF."""
        size = os.readv(self.fd, [self._chunk])
        self.buf += self._view[:size]
        return size > 0

    def poll(self) -> bool:
        """Read what has arrived, without waiting; False at EOF."""
        try:
            size = self.sock.recv_into(self._chunk, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True
        self.buf += self._view[:size]
        return size > 0

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        while True:
            yield from self.parse()
            if not self.feed():
                return


class ActivationStream:
    """Stands in for sys.stdout/sys.stderr: routes text to the current activation, if any."""

    def __init__(self, fd: int, channel: FrameChannel, is_err: bool) -> None:
        self._fd = fd
        self._channel = channel
        self._is_err = is_err
        self.encoding = "utf-8"
        self.errors = "replace"

    def write(self, text: str) -> int:
        activation = current.get()
        if activation is None:
            data = text.encode("utf-8", "replace")
            while data:
                data = data[os.write(self._fd, data):]
            return len(text)
        (activation.err if self._is_err else activation.out).append(text)
        activation.size += len(text)
        if activation.size >= LOG_FLUSH_BYTES:
            self._channel.send(*self._channel.flush_logs(activation))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


class ActivationEnviron(MutableMapping):
    """os.environ whose `__OW_*` keys read the current activation's values.

    Concurrent activations share one process, so a plain os.environ would show whichever
    request arrived last; this mapping overlays the per-activation values (contextvars).
    """

    def __init__(self, base: MutableMapping) -> None:
        self._base = base

    def _overlay(self) -> dict[str, str] | None:
        activation = current.get()
        return activation.env if activation is not None else None

    def __getitem__(self, key: str) -> str:
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            return overlay[key]
        return self._base[key]

    def __setitem__(self, key: str, value: str) -> None:
        overlay = self._overlay()
        if overlay is not None and (key.startswith("__OW_") or key in overlay):
            overlay[key] = value
        else:
            self._base[key] = value

    def __delitem__(self, key: str) -> None:
        overlay = self._overlay()
        if overlay is not None and key in overlay:
            del overlay[key]
        else:
            del self._base[key]

    def __iter__(self) -> Iterator[str]:
        overlay = self._overlay()
        if overlay is None:
            yield from self._base
            return
        yield from overlay
        yield from (k for k in self._base if k not in overlay)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def copy(self) -> dict[str, str]:
        return dict(self)

    def __repr__(self) -> str:
        return f"environ({dict(self)!r})"


def context_env(request: dict) -> dict[str, str]:
    """`__OW_<KEY>` for every top-level key but `value`; non-strings as compact JSON; the
    trace context (which the proxy always sends) also as TRACEPARENT and TRACESTATE."""
    env = {}
    for key, val in request.items():
        if key == "value":
            continue
        if val is None:
            val = ""
        elif not isinstance(val, str):
            val = CONTEXT_ENCODER.encode(val)
        env["__OW_" + key.upper()] = val
        if key in TRACE_FIELDS:
            env[key.upper()] = val
    return env


def exportable(name: str, value: str) -> bool:
    """What a real environment can carry (putenv refuses the rest and would end the worker)."""
    return bool(name) and "=" not in name and "\0" not in name and "\0" not in value


RESULT_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
CONTEXT_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_result(result: Any) -> bytes:
    """JSON of the result, with the standard library's rules (NaN is an error, as in the
    reference runtime). orjson is a fast path only: it writes NaN as null, so output that
    contains null is checked again, and anything it refuses goes to the standard library."""
    if orjson is not None:
        try:
            data = orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS)
        except (TypeError, ValueError):
            pass
        else:
            if b"null" not in data:
                return data
    return RESULT_ENCODER.encode(result).encode("utf-8")


class ActionRunner:
    """Calls the user's function for one request and turns every outcome into frames."""

    def __init__(self, main: Callable, channel: FrameChannel, timed: bool = False) -> None:
        self.main = main
        self.channel = channel
        self.timed = timed  # a worker's: the proxy paces its queue by how long runs take
        self.in_flight: Callable[[], int] = lambda: 1  # activations not yet finished

    def begin(self, ident: int, payload: bytes) -> tuple[Activation, Any]:
        """Parse one RUN payload; a bad one is answered here and raises BadRequest."""
        try:
            request = parse_json(payload)
            return Activation(ident, context_env(request)), request.get("value", {})
        except (ValueError, AttributeError) as exc:
            self.finish(Activation(ident, {}), "error", exc)
            raise BadRequest() from exc

    def chunk(self, activation: Activation, value: Any) -> None:
        """One chunk of a streamed result (a generator's item), with the logs written before it."""
        self.channel.send(*self.channel.flush_logs(activation), (CHUNK, activation.ident, encode_result(value)),
                          last=self.in_flight() <= 1)

    def stream(self, activation: Activation, result: Any) -> Any:
        """A generator's items as chunks; the result that ends the stream is the empty object."""
        for item in result:
            self.chunk(activation, item)
        return {}

    async def stream_async(self, activation: Activation, result: Any) -> Any:
        async for item in result:
            self.chunk(activation, item)
        return {}

    def finish(self, activation: Activation, outcome: str, value: Any) -> None:
        """outcome: 'result' (value = the result), 'error' (value = exception), 'exit', 'cancelled'."""
        ident = activation.ident
        if outcome == "result":
            try:
                frame = (DONE, ident, encode_result(value))
            except (TypeError, ValueError, OverflowError) as exc:
                activation.err.append(
                    f"The action returned a result that cannot be serialized to JSON: {exc}\n")
                frame = (FAILED, ident, b'{"reason":"result"}')
        elif outcome == "error":
            activation.err.append("".join(traceback.format_exception(value)))
            frame = (DONE, ident, encode_result({"error": str(value)}))
        elif outcome == "exit":
            frame = (FAILED, ident, json.dumps({"reason": "exit", "code": value}).encode())
        else:
            frame = (FAILED, ident, b'{"reason":"cancelled"}')
        frames = self.channel.flush_logs(activation)
        if self.timed:
            took = round((time.perf_counter() - activation.started) * 1e6)
            frames.append((TIME, ident, MICROSECONDS.pack(min(took, 0xFFFFFFFF))))
        self.channel.send(*frames, frame, last=self.in_flight() <= 1)


class BadRequest(Exception):
    """A RUN payload that is not a JSON object; already answered."""


def exit_code(exc: SystemExit) -> int:
    code = exc.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


# ---------------------------------------------------------------- loading the action

class InitFailure(Exception):
    """The action could not be loaded; `kind` is 'compile' (bad source) or 'start'."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def activate_virtualenv(root: str) -> None:
    venv = os.path.join(root, "virtualenv")
    if not os.path.isdir(venv):
        return
    for script in ("bin/activate_this.py", "Scripts/activate_this.py"):
        path = os.path.join(venv, script)
        if os.path.isfile(path):
            with open(path) as handle:
                exec(compile(handle.read(), path, "exec"), {"__file__": path})
            return
    import glob
    import site
    found = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages"))
    if not found:
        raise InitFailure(
            "compile", "Invalid virtualenv. Zip file does not include 'activate_this.py'.")
    for path in found:
        site.addsitedir(path)
        sys.path.remove(path)
        sys.path.insert(0, path)


def load_action(spec: dict) -> Callable:
    """Export env, enter the action folder and import the entry module; return its function."""
    for key, val in spec.get("env", {}).items():
        os.environ[key] = val
    root = spec["root"]
    os.chdir(root)
    sys.path.insert(0, root)
    activate_virtualenv(root)
    entry = os.path.join(root, spec["entry"])
    if not os.path.isfile(entry):
        raise InitFailure("compile", f"Zip file does not include {spec['entry']}")
    with open(entry, "rb") as handle:
        source = handle.read()
    try:
        code = compile(source, entry, "exec")
    except (SyntaxError, ValueError) as exc:
        raise InitFailure("compile", "".join(traceback.format_exception_only(exc)).rstrip())
    module_spec = importlib.util.spec_from_file_location(ENTRY_MODULE, entry)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[ENTRY_MODULE] = module
    exec(code, module.__dict__)
    name = spec["main"]
    func = getattr(module, name, None)
    if not callable(func):
        raise InitFailure("start", f"The action does not define a function named '{name}'.")
    return func


CO_COROUTINE = 0x80  # inspect.CO_COROUTINE: read from the code object, without importing inspect
CO_ASYNC_GENERATOR = 0x200  # inspect.CO_ASYNC_GENERATOR


def is_async(func: Callable) -> bool:
    """`async def main`, also one that yields (also a callable object's `async def __call__`,
    or a partial of one)."""
    while hasattr(func, "func") and not hasattr(func, "__code__"):  # functools.partial
        func = func.func
    code = getattr(func, "__code__", None) or getattr(getattr(func, "__call__", None), "__code__", None)
    return bool(code is not None and code.co_flags & (CO_COROUTINE | CO_ASYNC_GENERATOR))


def event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop, uvloop's when it is there. asyncio is imported here, not at start: a
    `def main` action never needs it, and on a one-CPU container its import would delay the
    first result (see prewarm)."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def prewarm() -> None:
    """A stem cell that may wait for /init imports the event loop's modules meanwhile, so an
    async action's /init does not pay for them. The proxy turns it off (ACTIONPROXY_PREWARM=0)
    where the action comes at once on a single CPU (a dedicated image): the import would only
    take CPU from the proxy's own start, and a `def main` action does not need it at all."""
    import asyncio  # noqa: F401

    try:
        import uvloop  # noqa: F401
    except ImportError:
        pass


# ---------------------------------------------------------------- serving

def serve_async(runner: ActionRunner, requests: FrameReader) -> None:
    """Run every activation as a task on one event loop; CANCEL frames cancel tasks."""
    import asyncio

    loop = event_loop()
    runner.channel.batch_on(loop)
    tasks: dict[int, asyncio.Task] = {}
    runner.in_flight = tasks.__len__

    async def run_one(ident: int, payload: bytes) -> None:
        try:
            activation, value = runner.begin(ident, payload)
        except BadRequest:
            tasks.pop(ident, None)
            return
        current.set(activation)
        try:
            result = runner.main(value)
            if hasattr(result, "__anext__"):  # an async generator: a streamed result
                result = await runner.stream_async(activation, result)
            else:
                result = await result
        except asyncio.CancelledError:
            runner.finish(activation, "cancelled", None)
        except SystemExit as exc:
            runner.finish(activation, "exit", exit_code(exc))
        except Exception as exc:
            runner.finish(activation, "error", exc)
        else:
            runner.finish(activation, "result", result)
        finally:
            tasks.pop(ident, None)

    done = loop.create_future()

    def dispatch() -> None:
        for kind, ident, payload in requests.parse():
            if kind == RUN:
                tasks[ident] = loop.create_task(run_one(ident, payload))
            elif kind == CANCEL and ident in tasks:
                tasks[ident].cancel()

    def on_stdin() -> None:
        try:
            more = requests.feed()
        except BlockingIOError:
            return
        if not more:
            loop.remove_reader(0)
            done.set_result(None)
            return
        dispatch()

    os.set_blocking(0, False)
    dispatch()
    loop.add_reader(0, on_stdin)
    loop.run_until_complete(done)


def take_requests(requests: FrameReader, waiting: dict[int, bytes], runner: ActionRunner) -> bool:
    """Read RUNs into `waiting` (in order): at once if some already wait, else until some come.
    A CANCEL drops a waiting RUN, answered as cancelled (the one running is killed instead).
    False at end-of-file."""
    while True:
        more = requests.poll() if waiting else requests.feed()
        for kind, ident, payload in requests.parse():
            if kind == RUN:
                waiting[ident] = payload
            elif kind == CANCEL and waiting.pop(ident, None) is not None:
                runner.channel.send((FAILED, ident, b'{"reason":"cancelled"}'))
        if waiting or not more:
            return more


def export(environ: MutableMapping, previous: dict[str, str], values: dict[str, str]) -> dict[str, str]:
    """Put an activation's context in the real environment, for subprocesses; the action itself
    reads every value through the overlay, as in async mode. Only what changed is written
    (each write is a putenv); a name the previous activation had and this one has not goes,
    so that its context does not leak into this one."""
    for key in previous.keys() - values.keys():
        environ.pop(key, None)
    for key, value in values.items():
        if previous.get(key) != value:
            environ[key] = value
    return values


def serve_sync(runner: ActionRunner, requests: FrameReader, environ: MutableMapping) -> None:
    """One activation at a time, in this thread (a forked worker), in the order they came;
    `environ` is the process's real environment."""
    exported: dict[str, str] = {}
    waiting: dict[int, bytes] = {}
    while take_requests(requests, waiting, runner):
        ident = next(iter(waiting))
        payload = waiting.pop(ident)
        try:
            activation, value = runner.begin(ident, payload)
        except BadRequest:
            continue
        exported = export(environ, exported, {k: v for k, v in activation.env.items() if exportable(k, v)})
        token = current.set(activation)
        try:
            result = runner.main(value)
            if hasattr(result, "__await__"):  # a def main that returned a coroutine
                import asyncio

                result = asyncio.run(result)
            elif hasattr(result, "__next__"):  # a generator: a streamed result
                result = runner.stream(activation, result)
        except SystemExit as exc:
            runner.finish(activation, "exit", exit_code(exc))
        except Exception as exc:
            runner.finish(activation, "error", exc)
        else:
            runner.finish(activation, "result", result)
        finally:
            current.reset(token)


def fork_worker(main: Callable, environ: MutableMapping) -> None:
    """Zygote side of FORK: the child connects back to the proxy and serves until EOF."""
    pid = os.fork()
    if pid:
        return
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setpgid(0, 0)  # its own group: killing it at a deadline takes what it started, not its siblings
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.close(3)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(WORKER_SOCKET)
        channel = FrameChannel(conn.fileno())
        install_streams(channel)
        serve_sync(ActionRunner(main, channel, timed=True), FrameReader(conn.fileno(), conn), environ)
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(0)


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by signal {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit code {os.WEXITSTATUS(status)}"


def reap_workers(signum: int, frame: Any) -> None:
    """Zygote: reap ended workers and tell the proxy how each ended (it is not their parent).
    A raw write of a small frame is atomic on a pipe: no lock needed in a signal handler."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        detail = describe_status(status).encode()
        os.write(3, HEADER.pack(WORKER_EXIT, pid, len(detail)) + detail)


def install_streams(channel: FrameChannel) -> None:
    sys.stdout = ActivationStream(1, channel, is_err=False)
    sys.stderr = ActivationStream(2, channel, is_err=True)


def main() -> None:
    global WORKER_SOCKET
    WORKER_SOCKET = os.environ.pop("ACTIONPROXY_WORKER_SOCKET", "")  # the proxy's, not the action's
    channel = FrameChannel(3)
    install_streams(channel)
    environ = os.environ
    os.environ = ActivationEnviron(environ)
    try:
        os.write(3, b'{"ok": true, "protocol": 2}\n')
    except BrokenPipeError:  # the proxy ended before it needed a launcher (a failed start)
        return
    if os.environ.pop("ACTIONPROXY_PREWARM", "1") == "1":
        prewarm()
    requests = FrameReader(0)
    for kind, _, payload in requests:
        if kind == INIT:
            break
    else:
        return
    try:
        func = load_action(json.loads(payload))
    except InitFailure as exc:
        sys.stderr.write(str(exc) + "\n")
        channel.send((INIT_DONE, 0, json.dumps({"ok": False, "error": exc.kind}).encode()))
        return
    except SystemExit:
        raise  # the proxy sees the launcher end during INIT and says so
    except BaseException:
        traceback.print_exc()
        channel.send((INIT_DONE, 0, b'{"ok":false,"error":"start"}'))
        return
    sys.stdout.flush()
    mode = "async" if is_async(func) else "sync"
    reply = {"ok": True, "mode": mode, **({"pipeline": True} if mode == "sync" else {})}
    channel.send((INIT_DONE, 0, json.dumps(reply).encode()))
    runner = ActionRunner(func, channel)
    if mode == "async":
        serve_async(runner, requests)
        return
    signal.signal(signal.SIGCHLD, reap_workers)
    for kind, _, _ in requests:
        if kind == FORK:
            fork_worker(func, environ)
