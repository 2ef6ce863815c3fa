"""The `actionproxy` command line: clear errors for bad ports, and what `serve` leaves out.

`serve` is on the cold-start path of every function container: it must import no build or
deploy tool (ksvc, bake, the Tekton client, PyYAML) and none of aiohttp's client side, which
the server never uses. Checked on a real `serve` with `-X importtime`, which lists every module
the process imported, up to its first result.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import free_port

ECHO = "def main(args):\n    return args\n"
TOOLS = ("actionproxy.tools.ksvc", "actionproxy.tools.bake", "actionproxy.tools.tekton", "yaml", "kubernetes")
CLIENT = {"aiohttp.client", "aiohttp.connector", "aiohttp.cookiejar"}


def actionproxy(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actionproxy", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_a_port_out_of_range_is_a_usage_error() -> None:
    for bad in ("99999", "0", "-1", "http"):
        done = actionproxy("serve", "--runtime", "python", "--port", bad)
        assert done.returncode == 2, (bad, done.stderr)
        assert "argument --port" in done.stderr and "Traceback" not in done.stderr, (bad, done.stderr)


def test_a_port_out_of_range_from_the_environment_is_a_clear_error() -> None:
    done = actionproxy("serve", "--runtime", "python", env={"PORT": "99999", "ACTIONPROXY_HOST": "127.0.0.1"})
    assert done.returncode == 1, done.stderr
    assert "cannot listen on 127.0.0.1:99999" in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_serve_help_explains_every_option() -> None:
    done = actionproxy("serve", "--help")
    assert done.returncode == 0
    for option in ("--runtime", "--port", "--init", "--main", "--platform"):
        line = next(line for line in done.stdout.splitlines() if line.strip().startswith(option))
        after = done.stdout.split(line, 1)[1].split("\n  -", 1)[0]
        assert len((line + after).split()) > 2, (option, line)


def test_serve_imports_no_tool_and_no_http_client(tmp_path: Path) -> None:
    """Up to the first result of a function given by --init."""
    action = tmp_path / "echo.py"
    action.write_text(ECHO)
    port = free_port()
    err = tmp_path / "importtime.txt"
    env = {**os.environ, "ACTIONPROXY_HOST": "127.0.0.1", "ACTIONPROXY_ACTION_DIR": str(tmp_path / "actions")}
    with open(err, "wb") as stderr:
        server = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "actionproxy", "serve", "--runtime",
                                   "python", "--port", str(port), "--init", str(action)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            limit = time.monotonic() + 30
            while True:
                assert server.poll() is None and time.monotonic() < limit, err.read_text()[-2000:]
                request = urllib.request.Request(f"http://127.0.0.1:{port}/run", b'{"value":{"a":1}}',
                                                 {"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        assert response.read() == b'{"a":1}'
                        break
                except (urllib.error.URLError, ConnectionError):
                    time.sleep(0.05)
        finally:
            server.terminate()
            server.wait(30)
    imported = {line.rsplit("|", 1)[1].strip() for line in err.read_text().splitlines() if line.startswith("import time:")}
    assert "aiohttp.web" in imported
    assert not [name for name in imported if name.startswith(TOOLS) or name in CLIENT], sorted(imported)


def test_a_function_that_does_not_load_at_start_says_why_without_sentinels(tmp_path: Path) -> None:
    """`serve --init` of code that does not load exits 3 with the reason; no OpenWhisk sentinel
    lines (there is no activation), no Go proxy wording, no traceback from the launcher."""
    for name, code, reason in (("bad.py", "def main(args)\n    return {}\n", "does not load"),
                               ("bad.zip", "PK\x03\x04garbage", "uncompressing")):
        function = tmp_path / name
        function.write_text(code)
        done = actionproxy("serve", "--runtime", "python", "--port", str(free_port()), "--init", str(function),
                           env={"ACTIONPROXY_HOST": "127.0.0.1", "ACTIONPROXY_ACTION_DIR": str(tmp_path / "a")})
        assert done.returncode == 3, done
        assert f"cannot load the action from {function}" in done.stderr and reason in done.stderr, done.stderr
        for noise in ("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX", "generate or locate a binary", "Traceback"):
            assert noise not in done.stdout + done.stderr, (noise, done.stdout, done.stderr)
    assert "SyntaxError" in actionproxy("serve", "--runtime", "python", "--port", str(free_port()), "--init",
                                        str(tmp_path / "bad.py")).stderr
