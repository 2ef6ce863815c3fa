"""`actionproxy bake` (Dockerfile + context, no docker) and `actionproxy build --local` (function
images built with the local daemon, then served: openwhisk /init + /run, knative POST /)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from actionproxy.tools import bake as bakemod
from actionproxy.cli import main as cli_main
from conftest import DOCKER, docker, free_port, image, require_docker

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
PY_FN = 'def main(args):\n    return {"hello": args.get("name")}\n'
PY_SIX = 'import six\n\ndef main(args):\n    return {"six": six.__version__, "name": args.get("name")}\n'
NODE_FN = 'function main(args) { return {hello: args.name}; }\nmodule.exports.main = main;\n'
EXEC = '#!/bin/sh\necho "{\\"exec\\": \\"$(echo "$1" | head -c 40 | tr -d \'"\')\\"}"\n'
DIGEST = "@sha256:" + "0" * 64


def source(tmp: Path, runtime: str, files: dict[str, str] | None = None) -> Path:
    src = tmp / f"src-{runtime}"
    src.mkdir(parents=True, exist_ok=True)
    default = {"python": {"__main__.py": PY_FN}, "nodejs": {"index.js": NODE_FN},
               "blackbox": {"exec": EXEC}}[runtime]
    for name, text in (files or default).items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    return src


@pytest.mark.parametrize("target", bakemod.TARGETS)
@pytest.mark.parametrize("runtime", bakemod.RUNTIMES)
def test_bake_dockerfile(tmp_path, runtime, target):
    baked = bakemod.bake(runtime, target, f"actionproxy/{runtime}{DIGEST}", source(tmp_path, runtime),
                         tmp_path / "out", main="entry")
    text = (tmp_path / "out" / "Dockerfile").read_text()
    assert text == baked.dockerfile
    assert baked.warnings == []
    assert f"FROM actionproxy/{runtime}{DIGEST} AS builder" in text
    assert f"\nFROM actionproxy/{runtime}{DIGEST}\n" in text
    assert "COPY action /action" in text and "COPY --from=builder /action /action" in text
    assert text.rstrip().endswith("USER 10001")
    assert (tmp_path / "out" / "action").is_dir()
    knative = target == "knative"
    assert ("__OW_RUNTIME_PLATFORM=knative" in text) == knative
    if runtime == "blackbox":
        assert "ACTIONPROXY_EXEC=/action/exec" in text and "OW_AUTOINIT" not in text
        assert "chmod 0755 /action/exec" in text
    else:
        # openwhisk: the invoker's /init must work, so no auto-init
        assert ("OW_AUTOINIT=/action" in text) == knative
        assert ("OW_AUTOINIT_MAIN=entry" in text) == knative
    assert "pip install" not in text and "npm install" not in text
    assert "ca_bundle" not in text.split("\nFROM ")[-1]


@pytest.mark.parametrize("target", bakemod.TARGETS)
def test_bake_python_requirements(tmp_path, target):
    src = source(tmp_path, "python", {"fn.py": PY_SIX, "requirements.txt": "six\n"})
    baked = bakemod.bake("python", target, "actionproxy/python:latest", src, tmp_path / "out")
    text = baked.dockerfile
    builder, final = text.rsplit("\nFROM ", 1)
    assert "--mount=type=secret,id=ca_bundle" in builder and "PIP_CERT" in builder
    assert "python3 -m venv" in builder
    assert "--target /action/virtualenv/lib/python3/site-packages -r requirements.txt" in builder
    assert "ca_bundle" not in final and "pip" not in final.replace("PYTHONPATH", "")
    assert ("PYTHONPATH=/action/virtualenv/lib/python3/site-packages" in final) == (target == "openwhisk")
    # the single .py becomes the entry module
    assert (tmp_path / "out" / "action" / "__main__.py").read_text() == PY_SIX
    assert not (tmp_path / "out" / "action" / "fn.py").exists()
    assert any("not a digest" in w for w in baked.warnings)


def test_bake_nodejs_dependencies(tmp_path):
    pkg = json.dumps({"name": "fn", "main": "index.js", "dependencies": {"left-pad": "1.3.0"}})
    src = source(tmp_path, "nodejs", {"package.json": pkg, "index.js": NODE_FN,
                                      "node_modules/left-pad/index.js": "module.exports = 1;\n"})
    baked = bakemod.bake("nodejs", "openwhisk", "actionproxy/nodejs" + DIGEST, src, tmp_path / "out")
    assert "npm install --omit=dev" in baked.dockerfile
    assert "vendored node_modules" in baked.dockerfile
    assert "NODE_PATH=/action/node_modules" in baked.dockerfile
    assert (tmp_path / "out" / "action" / "node_modules" / "left-pad" / "index.js").is_file()


def test_bake_nodejs_dependencies_without_npm_warns(tmp_path, monkeypatch):
    monkeypatch.setattr(bakemod.shutil, "which", lambda name: None)
    pkg = json.dumps({"name": "fn", "dependencies": {"left-pad": "1.3.0"}})
    src = source(tmp_path, "nodejs", {"package.json": pkg, "index.js": NODE_FN})
    baked = bakemod.bake("nodejs", "knative", "actionproxy/nodejs" + DIGEST, src, tmp_path / "out")
    assert any("npm" in w and "node_modules" in w for w in baked.warnings)


@pytest.mark.parametrize("runtime,files,message", [
    ("python", {"a.py": PY_FN, "b.py": PY_FN}, "__main__.py or a single .py"),
    ("nodejs", {"other.js": NODE_FN}, "package.json or index.js"),
    ("blackbox", {"run.sh": EXEC}, "named exec"),
])
def test_bake_rejects_bad_sources(tmp_path, runtime, files, message):
    with pytest.raises(bakemod.BakeError, match=message):
        bakemod.bake(runtime, "knative", "img" + DIGEST, source(tmp_path, runtime, files), tmp_path / "out")


def test_bake_cli(tmp_path, capsys):
    out = tmp_path / "out"
    code = cli_main(["bake", "--runtime", "python", "--target", "knative", "--runtime-image",
                     "actionproxy/python:latest", "--source", str(source(tmp_path, "python")),
                     "--output", str(out)])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out / "Dockerfile")
    assert "warning" in captured.err and "digest" in captured.err
    assert cli_main(["bake", "--runtime", "python", "--target", "knative", "--runtime-image", "x" + DIGEST,
                     "--source", str(tmp_path / "missing"), "--output", str(out)]) == 2


def test_build_of_a_local_folder_needs_local(tmp_path, capsys):
    """--source names a folder here: without --local that is a usage error that says what to do."""
    code = cli_main(["build", "--runtime", "python", "--target", "knative", "--runtime-image", "x" + DIGEST,
                     "--source", str(source(tmp_path, "python"))])
    assert code == 2
    err = capsys.readouterr().err
    assert "add --local" in err and "--source-url" in err


# --- function images built with the local Docker daemon ---------------------------------------


def build_local(src: Path, runtime: str, target: str, tag: str) -> str:
    cmd = [sys.executable, "-m", "actionproxy", "build", "--local", "--runtime", runtime, "--target", target,
           "--runtime-image", image(runtime), "--source", str(src), "--image", tag]
    if CA_BUNDLE.is_file():
        cmd += ["--ca-bundle", str(CA_BUNDLE)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, DOCKER=DOCKER or "docker"))
    assert done.returncode == 0, done.stderr[-3000:]
    image_id = done.stdout.strip()
    assert image_id.startswith("sha256:"), done.stdout
    return image_id


def post(port: int, path: str, body: dict, timeout: float = 30) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")
        except (ConnectionError, urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class Container:
    def __init__(self, tag: str) -> None:
        self.port = free_port()
        self.id = docker("run", "-d", "-p", f"127.0.0.1:{self.port}:8080", tag).stdout.strip()

    def logs(self) -> str:
        done = docker("logs", self.id, check=False)
        return done.stdout + done.stderr

    def close(self) -> None:
        docker("rm", "-f", self.id, check=False)


@pytest.fixture
def built(tmp_path):
    made: list[tuple[str, Container | None]] = []

    def make(runtime: str, target: str, files: dict[str, str] | None = None) -> Container:
        require_docker(runtime)
        tag = f"actionproxy-test-fn/{runtime}-{target}:{os.getpid()}-{len(made)}"
        build_local(source(tmp_path, runtime, files), runtime, target, tag)
        container = Container(tag)
        made.append((tag, container))
        return container

    yield make
    for tag, container in made:
        container.close()
        docker("rmi", "-f", tag, check=False)


PY_SIX_FILES = {"fn.py": PY_SIX, "requirements.txt": "six\n"}


def test_python_openwhisk_image(built):
    box = built("python", "openwhisk", PY_SIX_FILES)
    # a runtime image with the code ready: the invoker's /init (with the code) works, and the
    # dependency baked in at build time is importable
    status, body = post(box.port, "/init", {"value": {"code": PY_SIX, "main": "main"}})
    assert (status, body) == (200, {"ok": True}), box.logs()
    status, body = post(box.port, "/run", {"value": {"name": "Ada"}})
    assert status == 200, box.logs()
    assert body["name"] == "Ada" and body["six"].count(".") >= 1


def test_python_knative_image(built):
    box = built("python", "knative", PY_SIX_FILES)
    status, body = post(box.port, "/", {"name": "Ada"})
    assert status == 200, box.logs()
    assert body["name"] == "Ada" and body["six"].count(".") >= 1


def test_nodejs_knative_image(built):
    box = built("nodejs", "knative")
    status, body = post(box.port, "/", {"name": "Ada"})
    assert (status, body) == (200, {"hello": "Ada"}), box.logs()


def test_blackbox_openwhisk_image(built):
    box = built("blackbox", "openwhisk")
    status, body = post(box.port, "/run", {"value": {"name": "Ada"}})
    assert status == 200 and "exec" in body, box.logs()
    assert "Ada" in body["exec"]
    # the invoker's /init of a Docker action without code keeps the baked-in exec
    assert post(box.port, "/init", {"value": {}}) == (200, {"ok": True})
    status, body = post(box.port, "/run", {"value": {"name": "Bob"}})
    assert status == 200 and "Bob" in body["exec"], box.logs()


def test_blackbox_knative_image(built):
    box = built("blackbox", "knative")
    status, body = post(box.port, "/", {"name": "Ada"})
    assert status == 200 and "Ada" in body.get("exec", ""), (body, box.logs())
