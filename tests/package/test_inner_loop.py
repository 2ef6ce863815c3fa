"""The inner loop: `actionproxy run FILE`, `actionproxy invoke URL`, `serve --init FILE --watch`.

Real commands as a user types them, real proxies and launchers underneath.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil

from conftest import Proxy, free_port, wait_until

HELLO = ("def main(args):\n"
         "    print('greeting', args.get('name'))\n"
         "    return {'greeting': 'Hello, ' + str(args.get('name', 'world')) + '!', 'n': args.get('n')}\n")


def actionproxy(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actionproxy", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_run_prints_the_result_and_the_logs(tmp_path: Path) -> None:
    function = tmp_path / "hello.py"
    function.write_text(HELLO)
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"name": "file", "n": 1, "extra": [1]}))
    done = actionproxy("run", str(function), "--param-file", str(params), "-p", "name=Ada", "-p", "n=3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"greeting": "Hello, Ada!", "n": 3}
    assert done.stderr.splitlines() == ["greeting Ada"], "the activation's logs, without sentinels or drain lines"


def test_run_exits_1_on_an_error_result_and_2_when_the_function_does_not_load(tmp_path: Path) -> None:
    failing = tmp_path / "failing.py"
    failing.write_text("def main(args):\n    raise ValueError('no stock')\n")
    done = actionproxy("run", str(failing))
    assert done.returncode == 1 and json.loads(done.stdout) == {"error": "no stock"}
    assert "ValueError: no stock" in done.stderr
    broken = tmp_path / "broken.py"
    broken.write_text("def main(args) return\n")
    done = actionproxy("run", str(broken))
    assert done.returncode == 2 and done.stdout == ""
    assert "SyntaxError" in done.stderr and "did not load" in done.stderr


def test_run_tells_the_runtime_from_the_file(tmp_path: Path) -> None:
    node = tmp_path / "hello.js"
    node.write_text("function main(args) { console.log('node here'); return {runtime: 'nodejs', a: args.a}; }")
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/bash\necho '{\"runtime\": \"blackbox\"}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    package = tmp_path / "package.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("__main__.py", "def main(args):\n    return {'runtime': 'python zip'}\n")
    assert json.loads(actionproxy("run", str(node), "-p", 'a={"b": 1}').stdout) == {"runtime": "nodejs", "a": {"b": 1}}
    assert json.loads(actionproxy("run", str(script)).stdout) == {"runtime": "blackbox"}
    assert json.loads(actionproxy("run", str(package)).stdout) == {"runtime": "python zip"}
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    done = actionproxy("run", str(unknown))
    assert done.returncode == 2 and "give --runtime" in done.stderr and "Traceback" not in done.stderr
    done = actionproxy("run", str(node), "-p", "novalue")
    assert done.returncode == 2 and "-p takes key=value" in done.stderr


def test_invoke_sends_one_activation_and_times_it(proxy: Proxy) -> None:
    assert proxy.init(HELLO) == (200, {"ok": True})
    done = actionproxy("invoke", proxy.base, "-p", "name=Grace")
    assert done.returncode == 0 and json.loads(done.stdout) == {"greeting": "Hello, Grace!", "n": None}
    assert done.stderr.startswith(f"200 from {proxy.base}/run in ") and done.stderr.rstrip().endswith(" ms")
    done = actionproxy("invoke", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2 and "Connection refused" in done.stderr


def test_invoke_knative_posts_the_parameters_themselves(start_proxy) -> None:
    proxy = start_proxy("python", env={"__OW_RUNTIME_PLATFORM": "knative", "__OW_ACTION_CODE": HELLO})
    done = actionproxy("invoke", "--knative", proxy.base + "/", "-p", "name=Knative")
    assert done.returncode == 0 and json.loads(done.stdout)["greeting"] == "Hello, Knative!"


def test_serve_watch_loads_the_function_again_when_it_changes(tmp_path: Path) -> None:
    function = tmp_path / "hello.py"
    function.write_text(HELLO)
    port = free_port()
    env = {**os.environ, "ACTIONPROXY_HOST": "127.0.0.1", "ACTIONPROXY_ACTION_DIR": str(tmp_path / "actions")}
    server = subprocess.Popen([sys.executable, "-m", "actionproxy", "serve", "--runtime", "python", "--port",
                               str(port), "--init", str(function), "--watch"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"

    def greets(word: str) -> bool:
        done = actionproxy("invoke", url, "-p", "name=x")
        return done.returncode == 0 and json.loads(done.stdout)["greeting"].startswith(word)

    try:
        wait_until(lambda: greets("Hello"), "the first function", cap=30)
        function.write_text(HELLO.replace("Hello", "Bonjour"))
        wait_until(lambda: greets("Bonjour"), "the changed function", cap=30)
        function.write_text("def main(args) oops\n")  # a broken save: no proxy until the next one
        function.write_text(HELLO.replace("Hello", "Hola") + "\n")
        wait_until(lambda: greets("Hola"), "the fixed function", cap=30)
        children = psutil.Process(server.pid).children(recursive=True)
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
    assert code == 0, server.stderr.read()
    assert not [child for child in children if child.is_running() and child.status() != psutil.STATUS_ZOMBIE]
    assert "changed: loading it again" in server.stderr.read()


def test_watch_needs_init() -> None:
    done = actionproxy("serve", "--runtime", "python", "--watch")
    assert done.returncode == 2 and "--watch needs --init" in done.stderr
