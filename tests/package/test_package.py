"""The package as a user installs it: a wheel in a bare venv, used from a folder far from the
checkout. It must carry its launchers (package data), serve a function of each language, and
need nothing but the runtime dependencies: PyYAML and kubernetes come only with the `tools`
extra. Builds the wheel from this checkout and installs it with pip from the package index."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import free_port

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DEPS = {"aiohttp", "orjson", "uvloop", "psutil"}
FUNCTIONS = {"python": ("echo.py", "def main(args):\n    return {'echo': args}\n"),
             "nodejs": ("echo.js", "function main(args) {\n  return {echo: args};\n}\n"),
             "blackbox": ("echo.sh", '#!/bin/sh\necho "{\\"echo\\": $1}"\n')}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    return next(out.glob("actionproxy-*.whl"))


@pytest.fixture(scope="module")
def bare_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return venv


def requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = archive.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


def test_the_wheel_needs_only_the_runtime_dependencies(wheel: Path) -> None:
    plain = {r.split(">")[0].split("=")[0].split(";")[0].strip().lower() for r in requirements(wheel)
             if "extra ==" not in r}
    assert plain == RUNTIME_DEPS
    tools = [r for r in requirements(wheel) if "extra == \"tools\"" in r]
    assert {r.split(">")[0].strip().lower() for r in tools} == {"pyyaml", "kubernetes"}, tools


def test_the_wheel_carries_its_launchers(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = {info.filename: info.external_attr >> 16 for info in archive.infolist()}
    for launcher in ("launchers/python/launcher.py", "launchers/python/_actionproxy_launcher.py",
                     "launchers/nodejs/launcher.js", "launchers/blackbox/exec"):
        assert f"actionproxy/{launcher}" in names, sorted(names)
    assert names["actionproxy/launchers/blackbox/exec"] & 0o111, "the blackbox stub must stay executable"


def test_a_bare_install_pulls_no_tool_dependency(bare_venv: Path) -> None:
    done = subprocess.run([str(bare_venv / "bin" / "python"), "-c", "import yaml"], capture_output=True)
    assert done.returncode != 0, "PyYAML was installed"
    done = subprocess.run([str(bare_venv / "bin" / "python"), "-c", "import kubernetes"], capture_output=True)
    assert done.returncode != 0, "kubernetes was installed"


@pytest.mark.parametrize("runtime", FUNCTIONS)
def test_an_installed_wheel_serves_a_function_from_any_folder(bare_venv: Path, tmp_path: Path, runtime: str) -> None:
    """`actionproxy serve --init` in an empty folder, with the bare venv's interpreter as the
    Python launcher's and nothing from the checkout on any path."""
    name, code = FUNCTIONS[runtime]
    function = tmp_path / name
    function.write_text(code)
    function.chmod(0o755)
    port = free_port()
    env = {"PATH": f"{bare_venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "ACTIONPROXY_HOST": "127.0.0.1",
           "ACTIONPROXY_PYTHON": str(bare_venv / "bin" / "python")}
    node = subprocess.run(["sh", "-c", "command -v node"], capture_output=True, text=True).stdout.strip()
    if node:
        env["ACTIONPROXY_NODE"] = node
    server = subprocess.Popen([str(bare_venv / "bin" / "actionproxy"), "serve", "--runtime", runtime, "--port",
                               str(port), "--init", str(function)], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        answer = None
        limit = time.monotonic() + 30
        while answer is None:
            assert server.poll() is None, server.stderr.read().decode()
            assert time.monotonic() < limit, "no answer within 30 s"
            request = urllib.request.Request(f"http://127.0.0.1:{port}/run", b'{"value":{"n":1}}',
                                             {"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    answer = response.read()
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        assert answer.replace(b" ", b"") == b'{"echo":{"n":1}}', answer
    finally:
        server.terminate()
        server.wait(30)
    assert "site-packages/actionproxy" in subprocess.run(
        [str(bare_venv / "bin" / "python"), "-c", "import actionproxy; print(actionproxy.__file__)"],
        capture_output=True, text=True, cwd=tmp_path).stdout
