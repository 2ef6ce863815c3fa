"""The inner loop: run a function once on this machine (`actionproxy run FILE`), or send one
activation to a runtime that is already serving (`actionproxy invoke URL`).

`run` starts the real proxy (`serve --init FILE`) on a free loopback port, waits until the
function is loaded, sends one `/run`, prints the result as JSON on stdout and the activation's
logs on stderr, stops the proxy, and exits 0 for a result, 1 for an error result (`error` key
or a status other than 200), 2 when the function cannot be loaded. What runs is what a
container runs: same launchers, same contract.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

from actionproxy.executor.process import free_port

SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
READY_WITHIN = 60.0  # seconds a function may take to load
RUN_TIMEOUT = 300.0  # seconds one activation may take


def params(pairs: list[str], files: list[Path]) -> dict[str, Any]:
    """`--param-file` objects, then `-p key=value` (a value that parses as JSON is JSON)."""
    merged: dict[str, Any] = {}
    for path in files:
        loaded = json.loads(path.read_text())
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a JSON object")
        merged.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"-p takes key=value, not {pair!r}")
        try:
            merged[key] = json.loads(raw)
        except ValueError:
            merged[key] = raw
    return merged


def detect_runtime(path: Path) -> str:
    """python, nodejs or blackbox, from the file's name, a zip's entries, or an executable."""
    suffix = path.suffix.lower()
    if suffix == ".py":
        return "python"
    if suffix in (".js", ".mjs", ".cjs"):
        return "nodejs"
    if suffix == ".zip":
        names = set(zipfile.ZipFile(path).namelist())
        if "exec" in names:
            return "blackbox"
        if "__main__.py" in names:
            return "python"
        if names & {"package.json", "index.js"}:
            return "nodejs"
        raise ValueError(f"{path}: a zip with exec, __main__.py, package.json or index.js at its root")
    if os.access(path, os.X_OK):
        return "blackbox"
    raise ValueError(f"{path}: cannot tell its runtime (.py, .js, a zip, or an executable): give --runtime")


def add_parsers(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run a function once here and print its result",
                              description=__doc__.split("\n\n")[0])
    run.add_argument("file", type=Path, help="the function: a .py or .js file, a zip, or an executable")
    run.add_argument("--runtime", choices=("python", "nodejs", "blackbox"), help="default: from the file")
    run.add_argument("--main", default="main", help="entry point (default: main)")
    add_param_arguments(run)
    invoke = commands.add_parser("invoke", help="send one activation to a running runtime",
                                 description="POST one activation to a runtime (host or container) and "
                                             "print its result (stdout) and timing (stderr).")
    invoke.add_argument("url", help="the runtime: http://host:port (OpenWhisk: /run is added), or a Knative URL")
    invoke.add_argument("--knative", action="store_true", help="POST the parameters themselves to the URL")
    add_param_arguments(invoke)


def add_param_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                         help="a parameter (JSON when it parses, else a string); repeatable")
    command.add_argument("--param-file", action="append", default=[], type=Path, metavar="FILE",
                         help="a JSON object of parameters (under -p); repeatable")


def post(url: str, body: Any, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def show(status: int, raw: bytes) -> int:
    """Print the result; the exit status says whether it is one."""
    try:
        result = json.loads(raw)
    except ValueError:
        sys.stdout.write(raw.decode("utf-8", "replace") + "\n")
        return 1
    print(json.dumps(result, indent=2 if sys.stdout.isatty() else None, ensure_ascii=False))
    return 0 if status == 200 and not (isinstance(result, dict) and "error" in result) else 1


def run_here(args: argparse.Namespace) -> int:
    try:
        values = params(args.param, args.param_file)
        runtime = args.runtime or detect_runtime(args.file)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        print(f"actionproxy run: {exc}", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="actionproxy-run-") as tmp, \
            tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        env = {**os.environ, "ACTIONPROXY_HOST": "127.0.0.1", "ACTIONPROXY_ACTION_DIR": tmp,
               "__OW_RUNTIME_PLATFORM": "openwhisk", "ACTIONPROXY_LOG_FORMAT": "sentinel"}
        proxy = subprocess.Popen([sys.executable, "-m", "actionproxy", "serve", "--runtime", runtime, "--port",
                                  str(port), "--init", str(args.file), "--main", args.main],
                                 env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            if not _ready(proxy, port):
                _relay(out, err, whole=True)
                print(f"actionproxy run: {args.file} did not load (the reason is above)", file=sys.stderr)
                return 2
            status, raw = post(f"http://127.0.0.1:{port}/run",
                               {"value": values, "activation_id": uuid.uuid4().hex}, RUN_TIMEOUT)
        finally:
            if proxy.poll() is None:
                proxy.send_signal(signal.SIGTERM)
            proxy.wait()
        _relay(out, err, whole=False)
        return show(status, raw)


def _ready(proxy: subprocess.Popen, port: int) -> bool:
    """Until /readyz answers 200; False if the proxy exits first (a function that does not load)."""
    limit = time.monotonic() + READY_WITHIN
    while time.monotonic() < limit and proxy.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.02)
    return False


def _relay(out: Any, err: Any, whole: bool) -> None:
    """To stderr: the activation's log lines (its blocks on the proxy's stdout and stderr, up to
    their sentinels), or, `whole`, everything the proxy said (why the function did not load)."""
    for stream in (out, err):
        stream.seek(0)
        text = stream.read().decode("utf-8", "replace")
        if not whole:
            text = text[:text.rfind(SENTINEL)]
        for line in text.splitlines():
            if line != SENTINEL:
                print(line, file=sys.stderr)


def invoke(args: argparse.Namespace) -> int:
    try:
        values = params(args.param, args.param_file)
    except (OSError, ValueError) as exc:
        print(f"actionproxy invoke: {exc}", file=sys.stderr)
        return 2
    url = args.url
    if not args.knative and urllib.parse.urlsplit(url).path in ("", "/"):
        url = url.rstrip("/") + "/run"
    body = values if args.knative else {"value": values, "activation_id": uuid.uuid4().hex}
    started = time.perf_counter()
    try:
        status, raw = post(url, body, RUN_TIMEOUT)
    except (urllib.error.URLError, OSError) as exc:
        print(f"actionproxy invoke: {url}: {exc}", file=sys.stderr)
        return 2
    print(f"{status} from {url} in {(time.perf_counter() - started) * 1000:.1f} ms", file=sys.stderr)
    return show(status, raw)
