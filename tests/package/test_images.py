"""The runtime images themselves (container-only): the README's Docker quickstart, any UID on a
read-only root, `docker stop`, orphans reaped by PID 1, labels, and what the images must not
contain (pip, a compiler, the build's CA bundle secret).

The session-wide checks run against the images as docker-compose services
(tests/docker-compose.yml through pytest-docker's `docker_services`, docker-compose v1); the
ones that need their own `docker run` options start a container per test. The images are
built by `make images` beforehand, never here. Without docker, docker-compose or the images
the tests are skipped with the reason, except on CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import DOCKER, ROOT, RUNTIMES, ContainerProxy, docker, image, require_docker, wait_until

VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
COMPOSE_PROJECT = f"actionproxy-tests-{os.getpid()}"  # per session: concurrent runs never share services
README = ROOT / "README.md"

# an action per runtime that says which uid ran it
WHOAMI = {
    "python": "import os\ndef main(args):\n    return {'uid': os.getuid(), 'name': args.get('name')}\n",
    "nodejs": "function main(args) {\n  return {uid: process.getuid(), name: args.name};\n}\n",
    "blackbox": '#!/bin/bash\n[[ $1 =~ \\"name\\":\\"([^\\"]*)\\" ]]\n'
                'echo "{\\"uid\\": $(id -u), \\"name\\": \\"${BASH_REMATCH[1]}\\"}"\n',
}

# a blackbox exec that leaves children in a session of their own (out of reach of the
# proxy's process-group kill): when the exec exits they are orphans, re-parented to PID 1,
# and exit a second later
ORPHANS_EXEC = """#!/bin/bash
session=$(cut -d' ' -f6 /proc/$$/stat)
for i in 1 2 3; do
  setsid sleep 1 </dev/null >/dev/null 2>&1 &
  # the proxy kills the exec's process group when it exits: wait until the child has left it
  until [[ $(cut -d' ' -f6 /proc/$!/stat 2>/dev/null) != "$session" ]]; do :; done
done
echo '{"left": "three orphans"}'
"""


# ---------------------------------------------------------------- helpers



def http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def answers(url: str) -> bool:
    try:
        return http("GET", url, timeout=2)[0] == 200
    except OSError:
        return False


def top(container_id: str) -> list[dict[str, str]]:
    """The container's processes (host pids), as `docker top` sees them."""
    lines = docker("top", container_id, "-eo", "pid,ppid,stat,comm").stdout.splitlines()
    return [dict(zip(("pid", "ppid", "stat", "comm"), line.split(None, 3))) for line in lines[1:]]


# ---------------------------------------------------------------- pytest-docker

@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return "docker-compose"  # v1; there is no compose v2 plugin here


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(ROOT / "tests" / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return COMPOSE_PROJECT


@pytest.fixture(scope="session")
def docker_setup() -> list[str]:
    return ["up -d"]  # no --build: the images come from `make images`; v1 has no --wait


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    return ["down -v"]


@pytest.fixture(scope="session")
def services(request: pytest.FixtureRequest) -> dict[str, dict[str, str]]:
    """Every runtime image as a compose service, serving: {runtime: {"url", "id"}}."""
    require_docker(*RUNTIMES, compose=True)
    docker_services = request.getfixturevalue("docker_services")
    found = {}
    for runtime in RUNTIMES:
        url = f"http://127.0.0.1:{docker_services.port_for(runtime, 8080)}"
        docker_services.wait_until_responsive(check=lambda: answers(url + "/healthz"), timeout=30, pause=0.02)
        ids = docker("ps", "-q", "--filter", f"label=com.docker.compose.project={COMPOSE_PROJECT}",
                     "--filter", f"label=com.docker.compose.service={runtime}").stdout.split()
        assert len(ids) == 1, f"one {runtime} service container expected: {ids}"
        found[runtime] = {"url": url, "id": ids[0]}
    return found


@pytest.fixture
def container() -> Iterator[Callable[..., ContainerProxy]]:
    """container(runtime, *docker_args) -> a container of its own, removed after the test."""
    started: list[ContainerProxy] = []

    def start(runtime: str, *docker_args: str) -> ContainerProxy:
        require_docker(runtime)
        proxy = ContainerProxy(None, runtime, docker_args=docker_args)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


# ---------------------------------------------------------------- the README's quickstart

def readme_quickstart() -> tuple[str, list[tuple[str, Any]]]:
    """From the README's Docker section: the `docker run` command, and each `curl` command with
    the output shown after it (a `# ...` line; None when there is none)."""
    text = README.read_text()
    section = re.search(r"^## Docker[^\n]*\n(.*?)(?=^## )", text, re.M | re.S)
    assert section, "README.md has no `## Docker ...` section"
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", section.group(1), re.S):
        lines += block.replace("\\\n", "").splitlines()  # bash's line continuation
    servers = [line.split("  #")[0].strip() for line in lines if line.startswith("docker run")]
    assert len(servers) == 1, f"one `docker run` command expected in the README's Docker section: {servers}"
    calls: list[tuple[str, Any]] = []
    for line in lines:
        if line.startswith("curl "):
            calls.append((line.strip(), None))
        elif line.startswith("# ") and calls and calls[-1][1] is None:
            calls[-1] = (calls[-1][0], json.loads(line[2:]))
    assert calls, "no curl command in the README's Docker section"
    return servers[0], calls


def run_curl(command: str) -> str:
    """The command through bash when curl is installed, else the same request by urllib."""
    if subprocess.run(["bash", "-c", "command -v curl"], capture_output=True).returncode == 0:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}: {done.stderr}"
        return done.stdout
    words = shlex.split(command)[1:]
    method, headers, data, url = "GET", {}, None, None
    while words:
        word = words.pop(0)
        if word.startswith("-X"):
            method = word[2:] or words.pop(0)
        elif word == "-H":
            name, _, value = words.pop(0).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            data, method = words.pop(0).encode(), "POST" if method == "GET" else method
        elif not word.startswith("-"):
            url = word if "://" in word else "http://" + word
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read().decode()
    except urllib.error.HTTPError as err:
        return err.read().decode()


def test_readme_docker_quickstart_works_verbatim() -> None:
    """The README's `docker run --rm -p 8080:8080 actionproxy/python` and its curl calls, as
    written: each curl answers, with the output the README shows; Ctrl-C ends and removes it."""
    server, calls = readme_quickstart()
    runtime = re.search(r"actionproxy/(\w+)", server).group(1)
    require_docker(runtime)
    env = {**os.environ, "PATH": f"{Path(DOCKER).parent}:{os.environ['PATH']}"}  # `docker` is DOCKER
    process = subprocess.Popen(["bash", "-c", "exec " + server], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    container_id = ""
    try:
        def serving() -> bool:
            assert process.poll() is None, f"`{server}` exited: {process.communicate()[1]}"
            return answers("http://localhost:8080/healthz")
        wait_until(serving, f"`{server}` serving on localhost:8080")
        ids = docker("ps", "-q", "--filter", "publish=8080", "--filter", f"ancestor={image(runtime)}").stdout.split()
        container_id = ids[0] if len(ids) == 1 else ""
        for command, shown in calls:
            output = run_curl(command)
            parsed = json.loads(output)
            if shown is not None:
                assert parsed == shown, f"{command}\nprinted {output!r}, the README shows {shown!r}"
            else:
                assert not (isinstance(parsed, dict) and "error" in parsed), f"{command}\nprinted {output!r}"
        process.send_signal(signal.SIGINT)  # Ctrl-C in the terminal that runs it
        process.wait(15)
        if container_id:
            wait_until(lambda: not docker("ps", "-aq", "--filter", f"id={container_id}").stdout.strip(),
                       "--rm removing the container", cap=10, pause=0.1)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if container_id:
            docker("rm", "-f", "-v", container_id, check=False)


# ---------------------------------------------------------------- containers of their own

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_read_only_root_and_any_uid_serve_init_and_run(container, runtime: str) -> None:
    """`docker run --read-only --user 12345`: the image needs no writable path but its /tmp volume
    and no particular uid; init and run work and the action runs as that uid."""
    proxy = container(runtime, "--read-only", "--user", "12345")
    assert proxy.init(WHOAMI[runtime]) == (200, {"ok": True})
    assert proxy.run({"name": "Ada"}) == (200, {"uid": 12345, "name": "Ada"})
    assert proxy.run({"name": "Grace"}) == (200, {"uid": 12345, "name": "Grace"})


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_docker_stop_ends_the_container_quickly_with_exit_code_0(container, runtime: str) -> None:
    """PID 1 forwards docker stop's SIGTERM: the proxy drains and exits 0 within a few seconds
    (a PID 1 that ignored it would be killed after docker's 10 s grace, exit code 137)."""
    proxy = container(runtime)
    assert proxy.init(WHOAMI[runtime])[0] == 200
    assert proxy.run({"name": "x"})[0] == 200
    began = time.monotonic()
    docker("stop", proxy.container_id, timeout=30)
    took = time.monotonic() - began
    state = docker("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", proxy.container_id).stdout.split()
    assert state == ["false", "0"], f"after docker stop: running, exit code = {state}; logs: {proxy.streams()}"
    assert took < 5, f"docker stop took {took:.1f} s"


# ---------------------------------------------------------------- the compose services

@pytest.mark.parametrize("runtime", RUNTIMES)
def test_services_serve(services, runtime: str) -> None:
    """Each image as a compose service answers /healthz and /readyz (blackbox: ready before any
    /init, its stub or pre-installed exec; the others: 503 until an /init)."""
    url = services[runtime]["url"]
    assert http("GET", url + "/healthz") == (200, {"ok": True})
    status, _ = http("GET", url + "/readyz")
    assert status == (200 if runtime == "blackbox" else 503)


@pytest.mark.parametrize("runtime", ["python", "nodejs"])
def test_services_init_and_run(services, runtime: str) -> None:
    url = services[runtime]["url"]
    assert http("POST", url + "/init", {"value": {"code": WHOAMI[runtime]}}) == (200, {"ok": True})
    assert http("POST", url + "/run", {"value": {"name": "Ada"}}) == (200, {"uid": 10001, "name": "Ada"})


def test_pid_1_reaps_orphans(services) -> None:
    """A blackbox exec that leaves children behind in their own session: after it exits they are
    re-parented to PID 1, and when they exit PID 1 reaps them: no zombie remains."""
    blackbox = services["blackbox"]
    init_pid = docker("inspect", "-f", "{{.State.Pid}}", blackbox["id"]).stdout.strip()
    assert http("POST", blackbox["url"] + "/init", {"value": {"code": ORPHANS_EXEC}}) == (200, {"ok": True})
    assert http("POST", blackbox["url"] + "/run", {"value": {}}) == (200, {"left": "three orphans"})
    orphans = [p for p in top(blackbox["id"]) if p["comm"] == "sleep"]
    assert len(orphans) == 3 and all(p["ppid"] == init_pid for p in orphans), \
        f"three sleeps re-parented to PID 1 (host pid {init_pid}) expected: {top(blackbox['id'])}"
    wait_until(lambda: not [p for p in top(blackbox["id"]) if p["comm"] == "sleep" and not p["stat"].startswith("Z")],
               "the orphans exiting", cap=10, pause=0.1)
    wait_until(lambda: not [p for p in top(blackbox["id"]) if p["stat"].startswith("Z")],
               f"PID 1 reaping the orphans: {top(blackbox['id'])}", cap=5, pause=0.1)


# pip and a compiler are build tools: the final images must not have them
@pytest.mark.parametrize("runtime", ["python", "nodejs", "blackbox"])
def test_no_pip_and_no_compiler(services, runtime: str) -> None:
    """No pip, pip3, gcc, cc, g++, make on PATH, and no Python in the image can import pip."""
    script = ('for c in pip pip3 pip3.11 gcc cc g++ c++ make; do command -v "$c"; done; '
              'for py in python3 /usr/bin/python3 /usr/local/bin/python3; do '
              '  command -v "$py" >/dev/null && "$py" -c "import pip" 2>/dev/null && echo "$py: import pip"; '
              'done; true')
    found = docker("exec", services[runtime]["id"], "sh", "-c", script).stdout.split("\n")
    assert [line for line in found if line] == [], f"{image(runtime)} contains build tools"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_no_build_tools_of_ours_in_the_image(services, runtime: str) -> None:
    """The runtime carries the runtime alone: no actionproxy.tools (bake, build, ksvc, the
    Tekton client), no PyYAML, no kubernetes client; its CLI says how to get the tools."""
    script = ('py=/opt/actionproxy/bin/python; '
              'for m in actionproxy.tools yaml kubernetes; do "$py" -c "import $m" 2>/dev/null && echo "import $m"; done; '
              'ls -d /opt/actionproxy/lib/python3*/site-packages/actionproxy/tools 2>/dev/null; '
              'actionproxy ksvc --image x >/dev/null 2>&1 && echo "ksvc ran"; true')
    found = docker("exec", services[runtime]["id"], "sh", "-c", script).stdout.split("\n")
    assert [line for line in found if line] == [], f"{image(runtime)} carries tool code: {found}"
    done = docker("exec", services[runtime]["id"], "actionproxy", "build", "--help", check=False)
    assert done.returncode == 2 and "pip install 'actionproxy[tools]'" in done.stderr, done


def _bundle_lines() -> list[str]:
    """Lines of the certificates in the build's CA bundle (CA_BUNDLE, else the machine's) that
    the images do not ship themselves: what the secret alone could have put in an image."""
    bundle = Path(os.environ.get("CA_BUNDLE") or "/etc/ssl/certs/ca-certificates.crt")
    if not bundle.is_file():
        return []
    shipped = docker("run", "--rm", "--entrypoint", "cat", image("python"),
                     "/etc/ssl/certs/ca-certificates.crt", check=False).stdout
    lines = []
    for cert in re.findall(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", bundle.read_text(), re.S):
        body = cert.split()
        if cert not in shipped and len(body) > 3:
            lines += body[1:3]
    return lines


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_ca_bundle_secret_is_not_in_the_image(services, runtime: str) -> None:
    """The CA bundle given to the build as a BuildKit secret left no trace: nothing at
    /run/secrets, no history entry that mentions it, no file holding its certificates."""
    found = docker("exec", services[runtime]["id"], "sh", "-c", "ls -A /run/secrets 2>/dev/null; true").stdout
    assert found.strip() == "", f"/run/secrets in {image(runtime)}: {found}"
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image(runtime)).stdout
    for trace in ("ca_bundle", "/run/secrets", "PIP_CERT", "BEGIN CERTIFICATE"):
        assert trace not in history, f"`{trace}` in the history of {image(runtime)}:\n{history}"
    env = docker("image", "inspect", "--format", "{{json .Config.Env}}", image(runtime)).stdout
    assert "PIP_CERT" not in env, env
    lines = _bundle_lines()
    if lines:
        patterns = [arg for line in lines for arg in ("-e", line)]
        files = docker("run", "--rm", "--user", "0", "--entrypoint", "grep", image(runtime), "-rlF", *patterns,
                       "/", "--exclude-dir=proc", "--exclude-dir=sys", "--exclude-dir=dev",
                       check=False, timeout=120).stdout
        assert files.strip() == "", f"files of {image(runtime)} holding the CA bundle's certificates:\n{files}"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_oci_labels(runtime: str) -> None:
    """org.opencontainers.image.title and .version, and the version tag is the same image."""
    require_docker(runtime)
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", image(runtime)).stdout)
    assert labels.get("org.opencontainers.image.title") == f"actionproxy/{runtime}", labels
    assert labels.get("org.opencontainers.image.version") == VERSION, labels
    ids = {docker("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
           for tag in (image(runtime), f"actionproxy/{runtime}:{VERSION}")}
    assert len(ids) == 1, f"actionproxy/{runtime}:latest and :{VERSION} differ: {ids}"
