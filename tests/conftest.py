"""Test harness: real `actionproxy serve` processes on real ports, driven over real HTTP.

Modelled on OpenWhisk's ActionContainer harness (spec f.1): a proxy per test, its stdout and
stderr captured to files, init/run helpers that build the suite's payloads, and a stream
check that counts sentinels.

Targets. The same tests run against a proxy on the host ("host") and against the runtime
images ("container": `docker run -d -p 127.0.0.1::8080 actionproxy/<runtime>:latest`, one
container per proxy, streams from `docker logs`). A module opts in with a module-level
`TARGETS = ("host", "container")`; without it its tests run on the host only. A test that
cannot run in a container (it inspects host paths or host pids) is marked
`@pytest.mark.host_only("why")`: its container variant is not generated (not skipped).
Test ids name the target: `test_x[host]`, `test_x[container-...]`.

In a container the test's `tmp_path` is bind-mounted at the same path (read-write, with a 0
umask while the test runs, since the images run as uid 10001), so the folders the tests use
to coordinate with actions (barriers, hold/release files, markers) work unchanged. Host-path
settings are translated: `ACTIONPROXY_ACTION_DIR` naming a folder with a pre-installed `exec`
becomes that folder mounted read-only at /action with `ACTIONPROXY_EXEC=/action/exec` (how a
Docker action built FROM the blackbox image is laid out); other host paths are dropped and
the image's own settings apply.

Container tests need docker and the images (`make images`, never built here). Without them
the container variants are skipped with the reason, except on CI (CI=true), where that is a
failure.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import aiohttp
import pytest

ROOT = Path(__file__).resolve().parent.parent

# A bash function for test actions that must prove they ran at the same time: `wait_for DIR
# GLOB N` waits until N files match DIR/GLOB (30 s cap, then goes on) and leaves the count
# in $seen. Each action touches its own file first.
BASH_WAIT_FOR = r"""
wait_for() {
  local start=$SECONDS files=("$1"/$2)
  while (( ${#files[@]} < $3 && SECONDS - start < 30 )); do sleep 0.01; files=("$1"/$2); done
  seen=${#files[@]}
}
"""
SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
RUNTIMES = ("python", "nodejs", "blackbox")
# Debian's client (BuildKit built in); a newer `docker` first on PATH may lack buildx
DOCKER = os.environ.get("DOCKER") or (
    "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker"))
DOCKER_COMPOSE = shutil.which("docker-compose")
CONTAINER_LABEL = "actionproxy-test=harness"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zip_b64(files: dict[str, str | bytes], modes: dict[str, int] | None = None) -> str:
    """A base64 zip of {name: content}; `modes` sets unix permissions per name."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = ((modes or {}).get(name, 0o644) | 0o100000) << 16
            archive.writestr(info, content)
    return base64.b64encode(buf.getvalue()).decode()


class Proxy:
    """One running proxy process and the client calls the OpenWhisk suite makes."""

    def __init__(self, tmp: Path, runtime: str = "python", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.out_path = tmp / f"proxy-{self.port}.out"
        self.err_path = tmp / f"proxy-{self.port}.err"
        full_env = dict(os.environ)
        full_env.pop("OW_WAIT_FOR_ACK", None)
        full_env["ACTIONPROXY_HOST"] = "127.0.0.1"
        full_env["ACTIONPROXY_ACTION_DIR"] = str(tmp / f"actions-{self.port}")
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "actionproxy", "serve", "--runtime", runtime, "--port", str(self.port)],
            stdout=open(self.out_path, "wb"), stderr=open(self.err_path, "wb"), env=full_env, cwd=tmp)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"proxy exited: {self.err_path.read_text()}")
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("proxy did not start listening within 20 s")

    # ---------------------------------------------------------------- HTTP
    def post(self, path: str, body: bytes | dict | list, timeout: float = 60,
             headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        """POST; returns (status, parsed JSON body or None, raw body)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method="POST",
            headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw, hdrs = response.status, response.read(), response.headers
        except urllib.error.HTTPError as err:
            status, raw, hdrs = err.code, err.read(), err.headers
        assert hdrs.get("Content-Length") == str(len(raw)), "every response carries Content-Length"
        assert "chunked" not in (hdrs.get("Transfer-Encoding") or "")
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return status, parsed, raw

    def init(self, code: str | None, main: str = "main", env: dict | None = None,
             binary: bool = False) -> tuple[int, Any]:
        status, parsed, _ = self.post(
            "/init", {"value": {"code": code, "main": main, "binary": binary, "env": env}})
        return status, parsed

    def run(self, value: Any = None, timeout: float = 60, **other: Any) -> tuple[int, Any]:
        payload = {"value": {} if value is None else value, **other}
        status, parsed, _ = self.post("/run", payload, timeout=timeout)
        return status, parsed

    # ---------------------------------------------------------------- streams
    def streams(self, settle: float = 0.1) -> tuple[str, str]:
        time.sleep(settle)
        return (self.out_path.read_text(errors="replace"), self.err_path.read_text(errors="replace"))

    def check_streams(self, sentinels: int = 1, concurrent: bool = False) -> tuple[str, str]:
        """Like the OpenWhisk harness: count sentinels per stream, return the rest trimmed."""
        out, err = self._streams_for(sentinels)
        assert out.count(SENTINEL) == sentinels, out
        assert err.count(SENTINEL) == sentinels, err
        if concurrent:
            assert (SENTINEL + "\n") * sentinels in out
        return out.replace(SENTINEL, "").strip(), err.replace(SENTINEL, "").strip()

    def _streams_for(self, sentinels: int) -> tuple[str, str]:
        return self.streams()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# ---------------------------------------------------------------- docker

def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """Run the docker client; with `check`, a failure is an AssertionError carrying stderr."""
    assert DOCKER is not None, "no docker client"
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "DOCKER_BUILDKIT": "1"})
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def image(runtime: str) -> str:
    return f"actionproxy/{runtime}:latest"


@functools.cache
def _docker_problem() -> str | None:
    if DOCKER is None or shutil.which(DOCKER) is None:
        return f"docker is not installed ({DOCKER or 'no docker on PATH'})"
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "the docker daemon did not answer `docker info` within 30 s"
    if info.returncode != 0:
        return f"the docker daemon is not reachable: {info.stderr.strip()[:300]}"
    return None


@functools.cache
def _image_problem(tag: str) -> str | None:
    if docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).returncode != 0:
        return f"image {tag} is missing: build the images first (`make images`)"
    return None


def require_docker(*runtimes: str, compose: bool = False, tags: tuple[str, ...] = ()) -> None:
    """Docker, the images of `runtimes` and the image `tags` (and docker-compose) or: skip, or
    on CI (CI=true) fail.

    This is the only skip of the suite."""
    problems = [_docker_problem()]
    if problems[0] is None:
        problems += [_image_problem(tag) for tag in (*map(image, runtimes), *tags)]
    if compose and DOCKER_COMPOSE is None:
        problems.append("docker-compose (v1) is not installed")
    reason = "; ".join(p for p in problems if p)
    if not reason:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"container tests need docker: {reason} (CI=true: they must run, not skip)", pytrace=False)
    pytest.skip(f"container tests need docker: {reason}")


class ContainerProcess:
    """The `Proxy.process` of a container: `pid` is the host pid of the proxy process (the
    child of the image's PID 1 init), `poll()` its exit code once the container stopped."""

    def __init__(self, container_id: str) -> None:
        self.container_id = container_id

    @property
    def pid(self) -> int:
        import psutil
        init_pid = int(docker("inspect", "-f", "{{.State.Pid}}", self.container_id).stdout)
        assert init_pid > 0, "the container is not running"
        init = psutil.Process(init_pid)
        children = init.children()
        if len(children) == 1 and children[0].cmdline() == init.cmdline():
            return children[0].pid  # PID 1 is the proxy's own init; the proxy is its child
        return init_pid

    def poll(self) -> int | None:
        state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", self.container_id,
                       check=False).stdout.split()
        if not state:
            return -1  # removed
        return None if state[0] == "true" else int(state[1])


# the harness's host-only settings, and where a container has its own
_HOST_PATH_SETTINGS = ("ACTIONPROXY_ACTION_DIR", "ACTIONPROXY_RUNTIMES_DIR", "ACTIONPROXY_PYTHON",
                       "ACTIONPROXY_NODE", "ACTIONPROXY_EXEC", "ACTIONPROXY_HOST", "PORT")
_removals: list[subprocess.Popen] = []


class ContainerProxy(Proxy):
    """The same client, against `actionproxy/<runtime>:latest` in a container of its own."""

    def __init__(self, tmp: Path | None, runtime: str = "python", env: dict[str, str] | None = None,
                 docker_args: tuple[str, ...] = ()) -> None:
        """`tmp`: the test's folder, shared at the same path (None: nothing mounted);
        `docker_args`: more `docker run` options (`--read-only`, `--user`, ...)."""
        self.runtime = runtime
        args = ["run", "-d", "--label", CONTAINER_LABEL, "-p", "127.0.0.1::8080", *docker_args]
        if tmp is not None:
            args += ["-v", f"{tmp}:{tmp}"]
        for key, value in (env or {}).items():
            if key == "ACTIONPROXY_ACTION_DIR" and (Path(value) / "exec").is_file():
                args += ["-v", f"{value}:/action:ro", "-e", "ACTIONPROXY_EXEC=/action/exec"]
            elif key not in _HOST_PATH_SETTINGS:
                args += ["-e", f"{key}={value}"]
        self.container_id = docker(*args, image(runtime)).stdout.strip()
        self.process = ContainerProcess(self.container_id)
        try:
            address = docker("port", self.container_id, "8080/tcp").stdout.split()[0]
            self.port = int(address.rpartition(":")[2])
            self.base = f"http://127.0.0.1:{self.port}"
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        polls = 0
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/healthz", timeout=5):
                    return
            except (OSError, http.client.HTTPException):
                polls += 1
                if polls % 25 == 0 and self.process.poll() is not None:
                    raise RuntimeError(f"container exited: {self._logs()[1]}")
                time.sleep(0.02)
        raise RuntimeError(f"container did not serve GET /healthz within 30 s: {self._logs()}")

    def _logs(self) -> tuple[str, str]:
        done = subprocess.run([DOCKER, "logs", self.container_id], capture_output=True, timeout=60)
        return done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")

    def streams(self, settle: float = 0.1) -> tuple[str, str]:
        """stdout and stderr from `docker logs` (kept apart by docker). With a settle time, read
        until two reads agree: the logs reach docker through the shim, a little later."""
        time.sleep(settle)
        current = self._logs()
        if settle <= 0:
            return current
        limit = time.monotonic() + 5
        while time.monotonic() < limit:
            time.sleep(0.05)
            again = self._logs()
            if again == current:
                break
            current = again
        return current

    def _streams_for(self, sentinels: int) -> tuple[str, str]:
        """For check_streams: the streams once `sentinels` blocks reached docker (5 s at most)."""
        time.sleep(0.1)
        limit = time.monotonic() + 5
        out, err = self._logs()
        while min(out.count(SENTINEL), err.count(SENTINEL)) < sentinels and time.monotonic() < limit:
            time.sleep(0.02)
            out, err = self._logs()
        return out, err

    def stop(self) -> None:
        """`docker rm -f -v` (its /tmp volume too), in the background: waited for at the end."""
        _removals.append(subprocess.Popen([DOCKER, "rm", "-f", "-v", self.container_id],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for removal in _removals:
        removal.wait()


# ---------------------------------------------------------------- targets

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "host_only(reason): run only against a proxy on the host (in a module whose TARGETS "
                   "include containers), because the test inspects host paths or host pids")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`target` for the tests of a module with TARGETS; host-only tests get "host" alone."""
    targets = getattr(metafunc.module, "TARGETS", None)
    if targets is None or "target" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("host_only"):
        targets = [t for t in targets if t == "host"]
    metafunc.parametrize("target", list(targets))


@pytest.fixture
def target(request: pytest.FixtureRequest) -> str:
    """Where the proxies of this test run: "host" unless the module's TARGETS say otherwise."""
    return getattr(request, "param", "host")


@pytest.fixture
def start_proxy(tmp_path: Path, target: str) -> Iterator:
    """Factory: start_proxy(runtime, env={...}) -> Proxy; every proxy is stopped after the test."""
    started: list[Proxy] = []
    umask = None
    if target == "container":
        require_docker()
        tmp_path.chmod(0o777)
        umask = os.umask(0)

    def start(runtime: str = "python", env: dict[str, str] | None = None) -> Proxy:
        if target == "container":
            require_docker(runtime)
            proxy: Proxy = ContainerProxy(tmp_path, runtime, env)
        else:
            proxy = Proxy(tmp_path, runtime, env)
        started.append(proxy)
        return proxy

    try:
        yield start
    finally:
        if umask is not None:
            os.umask(umask)
        for proxy in started:
            proxy.stop()


@pytest.fixture
def proxy(start_proxy) -> Proxy:
    return start_proxy()


def wait_until(condition: Callable[[], bool], what: str, cap: float = 30, pause: float = 0.02) -> None:
    """Poll until `condition()` holds; fail (not hang) after `cap` seconds."""
    limit = time.monotonic() + cap
    while not condition():
        if time.monotonic() > limit:
            raise AssertionError(f"{what} did not happen within {cap} s")
        time.sleep(pause)


def process_gone(pid: int) -> bool:
    """True once `pid` no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def run_async(proxy: Proxy, payloads: list[dict], timeout: float = 60) -> list[tuple[int, Any]]:
    """POST every payload to /run at once on one asyncio loop; results in payload order."""
    async def all_of_them() -> list[tuple[int, Any]]:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async def one(payload: dict) -> tuple[int, Any]:
                async with session.post(proxy.base + "/run", json=payload) as response:
                    return response.status, await response.json(content_type=None)
            return list(await asyncio.gather(*(one(p) for p in payloads)))
    return asyncio.run(all_of_them())
