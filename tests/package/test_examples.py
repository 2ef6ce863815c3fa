"""The blackbox examples (runtimes/blackbox/examples/): built as images, called in real containers.

Each example image is built once per session (`docker build`, BuildKit) and run as a platform
runs a Docker action: `docker run -d -p 127.0.0.1::8080`, GET /healthz until it serves, then
POST /run, without any /init and after an /init of `{}` (which keeps the image's `exec`).
Results are checked whole; `docker logs` is checked by OpenWhisk's rules: each activation's
log lines, then the sentinel, on stdout and on stderr, one block per activation. Containers
are removed after each test.

Without docker, or without the base images (`make images`), the tests are skipped with the
reason, except on CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import http.client
import json
import struct
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator

import pytest

from conftest import DOCKER, ROOT, SENTINEL, docker, require_docker, wait_until

pytestmark = pytest.mark.timeout(900)  # the first test builds the images (apt-get in the C builder)

EXAMPLES = ROOT / "runtimes" / "blackbox" / "examples"
NAMES = ("c", "bash-loop", "python")  # functions: each checked by OpenWhisk's log rules below
APPS = ("http-app",)  # web apps of their own (blackbox http mode)
C_MSG = "Hello from arbitrary C program!"
MAX_ARG = 131071  # a longer JSON of `value` is not passed as $1, only on stdin


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """Every example image, built once per session: {name: tag}."""
    require_docker("blackbox")  # the examples build FROM it (and the C builder FROM its base)
    tags = {}
    for name in NAMES + APPS:
        tag = f"actionproxy-example/{name}"
        built = docker("build", "-q", "-t", tag, str(EXAMPLES / name), timeout=840, check=False)
        assert built.returncode == 0, f"building {tag} failed:\n{built.stdout}\n{built.stderr}"
        tags[name] = tag
    return tags


# ---------------------------------------------------------------- containers



class Container:
    """One running example container, published on 127.0.0.1 only."""

    def __init__(self, image: str, env: dict[str, str] | None = None) -> None:
        self.name = f"actionproxy-example-test-{uuid.uuid4().hex[:12]}"
        settings = [f"--env={key}={value}" for key, value in (env or {}).items()]
        self.id = docker("run", "-d", "--name", self.name, "--label", "actionproxy-test=examples",
                          *settings, "-p", "127.0.0.1::8080", image).stdout.strip()
        address = docker("port", self.id, "8080/tcp").stdout.split()[0]
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1", address
        self.port = int(port)
        wait_until(self._healthy, f"{image} answering GET /healthz")

    def _healthy(self) -> bool:
        try:
            return self.request("GET", "/healthz", timeout=2)[0] == 200
        except (OSError, http.client.HTTPException):
            running = docker("inspect", "-f", "{{.State.Running}}", self.id).stdout.strip()
            assert running == "true", f"the container exited: {self.logs()}"
            return False

    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, data, {"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw

    def init(self, body: Any) -> tuple[int, Any]:
        return self.request("POST", "/init", body)

    def run(self, value: Any, activation_id: str) -> tuple[int, Any]:
        return self.request("POST", "/run", {"value": value, "activation_id": activation_id,
                                             "namespace": "guest", "action_name": "example"})

    def logs(self) -> tuple[str, str]:
        done = docker("logs", self.id)
        return done.stdout, done.stderr

    def blocks(self, n: int) -> tuple[list[str], list[str]]:
        """Once `n` activations are logged: each stream as its blocks (text before each
        sentinel line), after checking OpenWhisk's rule of one sentinel per activation each.
        The first block also holds whatever the container wrote before any activation."""
        wait_until(lambda: all(s.count(SENTINEL) >= n for s in self.logs()), f"{n} log blocks")
        out, err = self.logs()
        assert out.count(SENTINEL) == n and err.count(SENTINEL) == n, (out, err)
        split = [stream.split(SENTINEL + "\n") for stream in (out, err)]
        assert split[0][-1] == "" and split[1][-1] == "", (out, err)  # nothing after the last sentinel
        return split[0][:-1], split[1][:-1]

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.id, check=False)


@pytest.fixture
def start(images: dict[str, str]) -> Iterator[Callable[..., Container]]:
    """start(name, env) -> a running container of that example; all are removed after the test."""
    started: list[Container] = []

    def starter(name: str, env: dict[str, str] | None = None) -> Container:
        container = Container(images[name], env)
        started.append(container)
        return container

    yield starter
    for container in started:
        container.remove()


def run_concurrently(container: Container, calls: list[tuple[Any, str]]) -> list[tuple[int, Any]]:
    """All calls at once (released together by a barrier), results in the order given."""
    barrier = threading.Barrier(len(calls))

    def one(call: tuple[Any, str]) -> tuple[int, Any]:
        barrier.wait(30)
        return container.run(*call)

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(one, calls))


# ---------------------------------------------------------------- every example, both ways

VALUE = {"name": "Ada", "text": "to be or not", "list": [1, 2.5, None, True], "odd": "é \" \\ \n\t ☃"}


def expected_c(value: Any, activation_id: str) -> tuple[dict, str, str]:
    """(result, stdout block, stderr block) of the C example."""
    return ({"msg": C_MSG, "activation": activation_id, "args": value},
            "This is a log message from the C program (stdout).\n",
            "This is a log message from the C program (stderr).\n")


def expected_python(value: dict, activation_id: str | None, python: str) -> tuple[dict, str, str]:
    """(result, stdout block, stderr block) of the Python example, for a value passed as argv[1]."""
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    words = value.get("text", "").split()
    return ({"greeting": f"Hello, {value['name']}!", "words": len(words),
             "longest": max(words, key=len, default=None), "activation": activation_id,
             "python": python, "input": "argv"},
            f"python: got {size} bytes of arguments from argv\n",
            "python: a line on stderr\n")


@pytest.mark.parametrize("with_init", [False, True], ids=["run-without-init", "init-empty-then-run"])
@pytest.mark.parametrize("name", NAMES)
def test_example_runs_and_logs_by_openwhisk_rules(start, name: str, with_init: bool) -> None:
    """Three activations: the exact results, and one log block per activation on each stream."""
    container = start(name)
    if with_init:
        assert container.init({}) == (200, {"ok": True})
    results = [container.run(VALUE, f"act-{i}") for i in range(3)]
    assert all(status == 200 for status, _ in results), results
    out, err = container.blocks(3)
    if name == "c":
        expected = [expected_c(VALUE, f"act-{i}") for i in range(3)]
    elif name == "python":
        python = results[0][1]["python"]
        assert python.startswith("3."), results[0]
        expected = [expected_python(VALUE, f"act-{i}", python) for i in range(3)]
    else:  # bash-loop: one warm process serves all three, its count goes on
        pid, started = results[0][1]["pid"], results[0][1]["started"]
        expected = [({"greeting": "Hello, Ada!", "count": i + 1, "pid": pid, "started": started,
                      "activation": f"act-{i}"},
                     f"bash-loop: call {i + 1} in process {pid} (activation act-{i})\n",
                     f"bash-loop: a line on stderr for activation act-{i}\n") for i in range(3)]
    assert [body for _, body in results] == [result for result, _, _ in expected]
    assert_blocks(out, [block for _, block, _ in expected])
    assert_blocks(err, [block for _, _, block in expected])


def assert_blocks(actual: list[str], expected: list[str]) -> None:
    """Each activation's block as expected; the first may follow the container's start-up output."""
    assert len(actual) == len(expected) and actual[0].endswith(expected[0]) and actual[1:] == expected[1:], \
        (actual, expected)


# ---------------------------------------------------------------- c

def test_c_echoes_any_json_value(start) -> None:
    """Not only objects: an array, and an empty object, come back as `args` unchanged."""
    container = start("c")
    for i, value in enumerate([[1, "two", {"three": 3}], {}, {"nested": {"deep": [[]]}}]):
        assert container.run(value, f"v{i}") == (200, {"msg": C_MSG, "activation": f"v{i}", "args": value})


def test_c_reads_a_value_too_long_for_argv_from_stdin(start) -> None:
    """Past 128 KiB the JSON is not passed as argv[1]; the program reads it from stdin instead."""
    container = start("c")
    value = {"blob": "x" * (MAX_ARG + 1000)}
    assert container.run(value, "big") == (200, {"msg": C_MSG, "activation": "big", "args": value})


def test_c_image_ships_only_a_static_binary(images: dict[str, str]) -> None:
    """The final stage has the binary and no compiler; the binary is a static ELF executable
    (no PT_INTERP program header: nothing from the image's C library is loaded)."""
    assert docker("run", "--rm", "--entrypoint", "sh", images["c"], "-c",
                   "command -v gcc cc || echo no-compiler").stdout.split() == ["no-compiler"]
    binary = subprocess.run([DOCKER, "run", "--rm", "--entrypoint", "cat", images["c"], "/action/exec"],
                            capture_output=True, timeout=60, check=True).stdout
    assert binary[:4] == b"\x7fELF", binary[:16]
    wide, order = binary[4] == 2, "<" if binary[5] == 1 else ">"
    phoff, = struct.unpack_from(order + ("Q" if wide else "I"), binary, 0x20 if wide else 0x1C)
    phentsize, phnum = struct.unpack_from(order + "HH", binary, 0x36 if wide else 0x2A)
    kinds = [struct.unpack_from(order + "I", binary, phoff + i * phentsize)[0] for i in range(phnum)]
    assert kinds and 3 not in kinds, f"program header types {kinds} (3 = PT_INTERP: dynamically linked)"


# ---------------------------------------------------------------- python

def test_python_reads_a_value_too_long_for_argv_from_stdin(start) -> None:
    container = start("python")
    status, body = container.run({"name": "Big", "text": "word " * 40000}, "big")
    assert status == 200 and body["input"] == "stdin" and body["words"] == 40000, (status, body)


def test_python_answers_a_non_object_argument_with_an_error_object(start) -> None:
    container = start("python")
    assert container.run([1, 2], "arr") == (200, {"error": "expected a JSON object as the argument, not list"})


def test_python_exec_needs_only_the_base_interpreter(images: dict[str, str]) -> None:
    """`python3` on the image's PATH (today the proxy's venv, first on PATH, links to it) is the
    base image's interpreter; with the venv off PATH and an empty environment the script gives
    the same result."""
    image = images["python"]
    found = docker("run", "--rm", "--entrypoint", "sh", image, "-c",
                    'p=$(command -v python3); echo "$p"; readlink -f "$p"').stdout.split()
    assert len(found) == 2 and not found[1].startswith("/opt/actionproxy/"), found
    argument = json.dumps(VALUE, separators=(",", ":"), ensure_ascii=False)
    bare = docker("run", "--rm", "--entrypoint", "/usr/bin/env", image,
                   "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "/action/exec", argument)
    lines = bare.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    python = result["python"]
    expected, out, err = expected_python(VALUE, None, python)
    assert result == expected and lines[:-1] == [out.strip()] and bare.stderr == err, bare


# ---------------------------------------------------------------- bash-loop

def test_bash_loop_serves_concurrent_activations_in_processes_of_their_own(start) -> None:
    """8 activations at once (each holding its process for 3 s of simulated work): 8 processes,
    the warm one going on with its count and 7 new ones at 1; every result and every log block
    belongs to its own activation."""
    container = start("bash-loop")
    warm = [container.run({"name": f"w{i}"}, f"warm-{i}") for i in range(3)]
    assert [(s, b["count"]) for s, b in warm] == [(200, 1), (200, 2), (200, 3)], warm
    warm_pid = warm[0][1]["pid"]
    n = 8
    calls = [({"name": f"c{i}", "sleep": 3}, f"conc-{i}") for i in range(n)]
    results = run_concurrently(container, calls)
    assert [(s, b["activation"], b["greeting"]) for s, b in results] == \
        [(200, f"conc-{i}", f"Hello, c{i}!") for i in range(n)], results
    pids = {b["pid"] for _, b in results}
    assert len(pids) == n, f"one process per concurrent activation: {results}"
    counts = sorted((b["pid"] == warm_pid, b["count"]) for _, b in results)
    assert counts == [(False, 1)] * (n - 1) + [(True, 4)], counts
    out, err = container.blocks(3 + n)
    by_pid = {b["pid"]: b for _, b in results}
    expected_out = sorted(f"bash-loop: call {b['count']} in process {pid} (activation {b['activation']})\n"
                          for pid, b in by_pid.items())
    assert sorted(out[3:]) == expected_out, out
    assert sorted(err[3:]) == sorted(f"bash-loop: a line on stderr for activation conc-{i}\n" for i in range(n)), err
    # and the pool keeps them warm: the next calls go on counting in those processes
    status, body = container.run({}, "after")
    assert (status, body["greeting"]) == (200, "Hello, stranger!") and body["pid"] in pids and body["count"] >= 2, body


def test_bash_loop_answers_any_value(start) -> None:
    """A value that is not an object gets the default greeting; the process keeps counting."""
    container = start("bash-loop")
    results = [container.run(value, f"v{i}") for i, value in enumerate([[1, 2], {}, {"name": 42}])]
    assert [(s, b["greeting"], b["count"]) for s, b in results] == \
        [(200, "Hello, stranger!", 1), (200, "Hello, stranger!", 2), (200, "Hello, 42!", 3)], results


# ---------------------------------------------------------------- http-app

def test_http_app_serves_openwhisk_activations_from_one_warm_process(start) -> None:
    container = start("http-app")
    results = [container.run({"name": f"n{i}"}, f"act-{i}") for i in range(3)]
    pid = results[0][1]["pid"]
    assert results == [(200, {"greeting": f"Hello, n{i}!", "visits": i + 1, "pid": pid}) for i in range(3)]
    out, _ = container.logs()
    assert "http-app: greeting n2 (activation act-2)" in out


def test_http_app_takes_knative_requests_as_they_came(start) -> None:
    container = start("http-app", {"__OW_RUNTIME_PLATFORM": "knative"})
    assert container.request("GET", "/items/7") == (200, {"item": "7"})
    status, body = container.request("POST", "/", {"name": "Knative"})
    assert status == 200 and body["greeting"] == "Hello, Knative!"
    assert container.request("GET", "/healthz") == (200, {"ok": True})  # the proxy's, not the app's
