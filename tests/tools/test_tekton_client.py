"""`actionproxy build` (cluster mode) against a fake Kubernetes API server over real HTTP.

The fake (an aiohttp app in a background thread) speaks the REST and watch protocol the client
uses: create/get/list/watch/patch pipelineruns, list/watch taskruns by label, get pods and stream
pod logs. A scenario coroutine plays the Tekton controller after the PipelineRun is created.
The real CLI runs as a subprocess, pointed at the fake with a kubeconfig in tmp_path.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
NS = "builds"
BASE = ["build", "--runtime", "python", "--target", "knative",
        "--source-url", "https://github.com/example/hello-action.git",
        "--runtime-image", "registry.example.com/actionproxy/python@sha256:" + "0" * 64,
        "--image", "registry.example.com/functions/hello:1"]


# ------------------------------------------------------------------------------- the fake API server
def status(code: int, reason: str, message: str, kind: str = "pipelineruns") -> web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": {"group": "tekton.dev", "kind": kind}, "code": code}
    return web.json_response(body, status=code)


def merge(into: dict, patch: dict) -> dict:
    for k, v in patch.items():
        if v is None:
            into.pop(k, None)
        elif isinstance(v, dict) and isinstance(into.get(k), dict):
            merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


class FakeKube:
    def __init__(self):
        self.objects: dict[str, dict[str, dict]] = {"pipelineruns": {}, "taskruns": {}}
        self.pods: dict[str, dict] = {}
        self.logs: dict[tuple[str, str], list[str]] = {}
        self.rv = 100
        self.events: list[tuple[int, str, str, dict]] = []  # rv, plural, type, object
        self.expired_below = 0
        self.epoch = 0
        self.fail: tuple[int, str] | None = None  # answer pipelineruns with this status
        self.patches: list[tuple[str, dict]] = []
        self.requests: list[str] = []
        self.gone_sent = 0
        self.scenario = None  # async fn(fake, name) started when a PipelineRun is created
        self.loop: asyncio.AbstractEventLoop | None = None
        self.changed: asyncio.Condition | None = None
        self.tasks = []
        self.closing = False

    # --- the controller's side
    async def put(self, plural: str, obj: dict, kind: str = "MODIFIED") -> dict:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        obj["metadata"].setdefault("namespace", NS)
        self.objects[plural][obj["metadata"]["name"]] = obj
        self.events.append((self.rv, plural, kind, copy.deepcopy(obj)))
        async with self.changed:
            self.changed.notify_all()
        return obj

    async def update(self, plural: str, name: str, patch: dict) -> dict:
        return await self.put(plural, merge(copy.deepcopy(self.objects[plural][name]), patch))

    async def expire(self) -> None:
        """Compact history: watches from older resourceVersions get 410 Gone."""
        self.expired_below = self.rv
        self.epoch += 1
        async with self.changed:
            self.changed.notify_all()

    # --- the HTTP side
    def app(self) -> web.Application:
        app = web.Application()
        base = "/apis/tekton.dev/v1/namespaces/{ns}/{plural}"
        app.router.add_get(base, self.list_or_watch)
        app.router.add_post(base, self.create)
        app.router.add_get(base + "/{name}", self.get)
        app.router.add_patch(base + "/{name}", self.patch)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}", self.get_pod)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{pod}/log", self.pod_log)

        @web.middleware
        async def record(request, handler):
            self.requests.append(f"{request.method} {request.path_qs}")
            if self.fail and request.match_info.get("plural") == "pipelineruns":
                code, message = self.fail
                if code == 404:
                    return web.Response(status=404, text="404 page not found\n", content_type="text/plain")
                return status(code, "Forbidden", message)
            return await handler(request)

        app.middlewares.append(record)
        return app

    def selected(self, request, obj: dict) -> bool:
        field = request.query.get("fieldSelector", "")
        if field.startswith("metadata.name=") and obj["metadata"]["name"] != field.split("=", 1)[1]:
            return False
        for term in filter(None, request.query.get("labelSelector", "").split(",")):
            k, v = term.split("=", 1)
            if (obj["metadata"].get("labels") or {}).get(k) != v:
                return False
        return True

    async def create(self, request):
        plural = request.match_info["plural"]
        body = await request.json()
        meta = body.setdefault("metadata", {})
        if "name" not in meta:
            meta["name"] = meta["generateName"] + f"x{len(self.objects[plural]) + 1:04d}"
        meta["uid"] = f"uid-{meta['name']}"
        meta["creationTimestamp"] = "2026-01-01T00:00:00Z"
        obj = await self.put(plural, body, "ADDED")
        if plural == "pipelineruns" and self.scenario:
            self.tasks.append(asyncio.ensure_future(self.scenario(self, meta["name"])))
        return web.json_response(obj, status=201)

    async def get(self, request):
        plural, name = request.match_info["plural"], request.match_info["name"]
        if name not in self.objects[plural]:
            return status(404, "NotFound", f'{plural} "{name}" not found', plural)
        return web.json_response(self.objects[plural][name])

    async def patch(self, request):
        plural, name = request.match_info["plural"], request.match_info["name"]
        body = await request.json()
        self.patches.append((request.headers.get("Content-Type", ""), body))
        if name not in self.objects[plural]:
            return status(404, "NotFound", f'{plural} "{name}" not found', plural)
        obj = await self.update(plural, name, body)
        if plural == "pipelineruns" and (body.get("spec") or {}).get("status") == "Cancelled":
            obj = await self.update(plural, name, {"status": {"conditions": [
                {"type": "Succeeded", "status": "False", "reason": "Cancelled",
                 "message": "PipelineRun was cancelled"}]}})
        return web.json_response(obj)

    async def list_or_watch(self, request):
        plural = request.match_info["plural"]
        if request.query.get("watch") in ("1", "true", "True"):
            return await self.watch(request, plural)
        items = [o for o in self.objects[plural].values() if self.selected(request, o)]
        return web.json_response({"apiVersion": "tekton.dev/v1", "kind": "List", "items": items,
                                  "metadata": {"resourceVersion": str(self.rv)}})

    async def watch(self, request, plural):
        rv = int(request.query.get("resourceVersion") or 0)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)

        async def send(kind, obj):
            await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        async def gone():
            self.gone_sent += 1
            await send("ERROR", {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                                 "reason": "Expired", "message": f"too old resource version: {rv}"})

        if rv and rv < self.expired_below:
            await gone()
            return resp
        epoch = self.epoch
        deadline = time.monotonic() + float(request.query.get("timeoutSeconds") or 30)
        while time.monotonic() < deadline and not self.closing:
            for erv, eplural, kind, obj in list(self.events):
                if erv > rv and eplural == plural:
                    rv = erv
                    if self.selected(request, obj):
                        await send(kind, obj)
            if self.epoch != epoch:
                await gone()
                return resp
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass
        return resp

    async def get_pod(self, request):
        pod = request.match_info["pod"]
        if pod not in self.pods:
            return status(404, "NotFound", f'pods "{pod}" not found', "pods")
        return web.json_response(self.pods[pod])

    async def pod_log(self, request):
        pod, container = request.match_info["pod"], request.query.get("container")
        if (pod, container) not in self.logs:
            return status(400, "BadRequest", f"container {container} is not valid for pod {pod}", "pods")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for line in self.logs[(pod, container)]:
            await resp.write(line.encode() + b"\n")
            await asyncio.sleep(0.01)
        return resp


@pytest.fixture
def fake():
    kube = FakeKube()
    ready = threading.Event()
    state = {}

    def serve():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        kube.loop = loop
        kube.changed = asyncio.Condition()
        runner = web.AppRunner(kube.app(), shutdown_timeout=1)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = site._server.sockets[0].getsockname()[1]
        state["runner"] = runner
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    kube.port = state["port"]
    yield kube
    kube.closing = True

    async def stop():
        for task in kube.tasks:
            task.cancel()
        await state["runner"].cleanup()

    asyncio.run_coroutine_threadsafe(stop(), kube.loop).result(15)
    kube.loop.call_soon_threadsafe(kube.loop.stop)
    thread.join(10)


@pytest.fixture
def kubeconfig(tmp_path, fake):
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{fake.port}"}}],
        "users": [{"name": "fake", "user": {"token": "not-checked"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NS}}],
    }))
    return path


def env_for(kubeconfig: Path | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    env["PYTHONUNBUFFERED"] = "1"
    env["HOME"] = str(kubeconfig.parent if kubeconfig else "/nonexistent")
    if kubeconfig:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def cli(args, kubeconfig, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "actionproxy", *args], env=env_for(kubeconfig),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


# ------------------------------------------------------------------------------- scenarios
def taskrun(pr: str, task: str, pod: str) -> dict:
    return {"apiVersion": "tekton.dev/v1", "kind": "TaskRun",
            "metadata": {"name": f"{pr}-{task}", "labels": {"tekton.dev/pipelineRun": pr,
                                                            "tekton.dev/pipelineTask": task}},
            "spec": {"taskRef": {"name": task}},
            "status": {"podName": pod, "conditions": [{"type": "Succeeded", "status": "Unknown",
                                                       "reason": "Running"}]}}


def pod(name: str, steps: list[str], phase="Running", waiting: str | None = None) -> dict:
    statuses = []
    if waiting:
        statuses = [{"name": f"step-{s}", "image": "registry.example.com/missing:1",
                     "state": {"waiting": {"reason": waiting, "message": "manifest unknown"}}} for s in steps]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
            "spec": {"containers": [{"name": f"step-{s}", "image": "x"} for s in steps]},
            "status": {"phase": "Pending" if waiting else phase, "containerStatuses": statuses}}


def cond(status_: str, reason: str, message: str = "") -> dict:
    return {"conditions": [{"type": "Succeeded", "status": status_, "reason": reason, "message": message}]}


async def run_task(k: FakeKube, pr: str, task: str, steps: dict[str, list[str]], exit_codes=None,
                   gap: float = 0.05):
    exit_codes = exit_codes or {}
    pod_name = f"{pr}-{task}-pod"
    k.pods[pod_name] = pod(pod_name, list(steps))
    for step, lines in steps.items():
        k.logs[(pod_name, f"step-{step}")] = lines
    await k.put("taskruns", taskrun(pr, task, pod_name), "ADDED")
    await k.update("pipelineruns", pr, {"status": {"childReferences": [
        {"name": f"{pr}-{task}", "pipelineTaskName": task, "kind": "TaskRun"}]}})
    await asyncio.sleep(gap)
    failed = [s for s in steps if exit_codes.get(s)]
    step_status = [{"name": s, "container": f"step-{s}",
                    "terminated": {"exitCode": exit_codes.get(s, 0),
                                   "reason": "Error" if exit_codes.get(s) else "Completed"}} for s in steps]
    result = cond("False", "Failed", f'"step-{failed[0]}" exited with code {exit_codes[failed[0]]}') \
        if failed else cond("True", "Succeeded", "All Steps have completed executing")
    await k.update("taskruns", f"{pr}-{task}", {"status": {**result, "steps": step_status}})
    k.pods[pod_name]["status"]["phase"] = "Failed" if failed else "Succeeded"
    return not failed


async def succeed(k: FakeKube, pr: str, expire_midway: bool = False):
    await asyncio.sleep(0.05)
    await k.update("pipelineruns", pr, {"status": {**cond("Unknown", "Running", "Tasks Completed: 0"),
                                                   "startTime": "2026-01-01T00:00:01Z"}})
    await run_task(k, pr, "fetch", {"clone": ["Cloning into 'output'...", "commit abc123"]})
    if expire_midway:
        await asyncio.sleep(0.2)
        await k.expire()
        await asyncio.sleep(0.2)
    await run_task(k, pr, "build", {"build-and-push": ["STEP 1/3: FROM runtime", "pushed"],
                                    "write-url": []})
    await asyncio.sleep(0.05)
    await k.update("pipelineruns", pr, {"status": {
        **cond("True", "Succeeded", "Tasks Completed: 2 (Failed: 0, Cancelled 0), Skipped: 0"),
        "results": [{"name": "IMAGE_URL", "value": "registry.example.com/functions/hello:1"},
                    {"name": "IMAGE_DIGEST", "value": "sha256:" + "a" * 64}]}})


async def fail_build(k: FakeKube, pr: str):
    await k.update("pipelineruns", pr, {"status": cond("Unknown", "Running")})
    await run_task(k, pr, "fetch", {"clone": ["ok"]})
    await run_task(k, pr, "build", {"build-and-push": ["STEP 1/3: FROM runtime", "pip install flask",
                                                       "ERROR: No matching distribution found for flaskk"]},
                   exit_codes={"build-and-push": 1})
    await k.update("pipelineruns", pr, {"status": cond(
        "False", "Failed", "Tasks Completed: 2 (Failed: 1, Cancelled 0), Skipped: 1")})


async def time_out(k: FakeKube, pr: str):
    await k.update("pipelineruns", pr, {"status": cond("Unknown", "Running")})
    await asyncio.sleep(0.1)
    await k.update("pipelineruns", pr, {"status": cond(
        "False", "PipelineRunTimeout", 'PipelineRun "x" failed to finish within "30m0s"')})


async def pull_failure(k: FakeKube, pr: str):
    await k.update("pipelineruns", pr, {"status": cond("Unknown", "Running")})
    pod_name = f"{pr}-bake-pod"
    k.pods[pod_name] = pod(pod_name, ["bake"], waiting="ImagePullBackOff")
    await k.put("taskruns", taskrun(pr, "bake", pod_name), "ADDED")
    await k.update("pipelineruns", pr, {"status": {"childReferences": [{"name": f"{pr}-bake"}]}})


async def hang(k: FakeKube, pr: str):
    await k.update("pipelineruns", pr, {"status": cond("Unknown", "Running")})
    pod_name = f"{pr}-fetch-pod"
    k.pods[pod_name] = pod(pod_name, ["clone"], phase="Pending")
    await k.put("taskruns", taskrun(pr, "fetch", pod_name), "ADDED")


# ------------------------------------------------------------------------------- the tests
def test_success_streams_logs_in_order_and_prints_results(fake, kubeconfig):
    fake.scenario = succeed
    done = cli([*BASE, "--deploy", "--service-name", "hello"], kubeconfig)
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    expected = ["PipelineRun actionproxy-function-x0001 created in namespace builds",
                "[fetch] started", "[fetch : clone] Cloning into 'output'...", "[fetch : clone] commit abc123",
                "[fetch] succeeded", "[build] started", "[build : build-and-push] STEP 1/3: FROM runtime",
                "[build : build-and-push] pushed", "[build] succeeded",
                "PipelineRun actionproxy-function-x0001 succeeded",
                "IMAGE_URL=registry.example.com/functions/hello:1", "IMAGE_DIGEST=sha256:" + "a" * 64]
    positions = [out.find(line) for line in expected]
    assert -1 not in positions, out
    assert positions == sorted(positions), out
    assert out.count("[fetch : clone] commit abc123") == 1
    created = fake.objects["pipelineruns"]["actionproxy-function-x0001"]
    params = {p["name"]: p["value"] for p in created["spec"]["params"]}
    assert params["deploy"] == "true" and params["service-name"] == "hello"
    assert created["metadata"]["namespace"] == NS
    assert any("watch=" in r and "fieldSelector=metadata.name" in r for r in fake.requests)
    assert any("labelSelector=tekton.dev%2FpipelineRun" in r or "labelSelector=tekton.dev/pipelineRun" in r
               for r in fake.requests)
    assert any("/log?" in r and "follow=true" in r and "container=step-build-and-push" in r
               for r in fake.requests)


def test_failed_step_reports_task_step_exit_code_and_last_lines(fake, kubeconfig):
    fake.scenario = fail_build
    done = cli(BASE, kubeconfig)
    assert done.returncode == 1, done.stderr + done.stdout
    assert "[build] failed: Failed" in done.stdout
    assert "[build] step build-and-push exited with code 1" in done.stdout
    assert "    ERROR: No matching distribution found for flaskk" in done.stdout.split("last log lines")[1]
    assert "failed (Failed)" in done.stderr
    assert "Traceback" not in done.stderr


def test_watch_410_relists_and_resumes(fake, kubeconfig):
    fake.scenario = lambda k, pr: succeed(k, pr, expire_midway=True)
    done = cli(BASE, kubeconfig)
    assert done.returncode == 0, done.stderr + done.stdout
    assert fake.gone_sent >= 1
    assert "IMAGE_DIGEST=sha256:" in done.stdout
    lists = [r for r in fake.requests if r.startswith("GET /apis/tekton.dev/v1/namespaces/builds/pipelineruns?")
             and "watch=" not in r]
    assert len(lists) >= 2, fake.requests  # the initial list and the re-list after 410
    assert done.stdout.count("[build : build-and-push] pushed") == 1


def test_timeout_is_reported(fake, kubeconfig):
    fake.scenario = time_out
    done = cli(BASE, kubeconfig)
    assert done.returncode == 1
    assert "timed out" in done.stderr and "30m0s" in done.stderr


def test_image_pull_failure_is_reported(fake, kubeconfig):
    fake.scenario = pull_failure
    done = cli(BASE, kubeconfig)
    assert done.returncode == 1, done.stderr + done.stdout
    assert "cannot pull image registry.example.com/missing:1" in done.stderr
    assert "ImagePullBackOff" in done.stderr
    assert "Traceback" not in done.stderr


def test_crds_missing(fake, kubeconfig):
    fake.fail = (404, "")
    done = cli(BASE, kubeconfig)
    assert done.returncode == 1
    assert "Tekton Pipelines is not installed" in done.stderr
    assert "Traceback" not in done.stderr


def test_forbidden(fake, kubeconfig):
    fake.fail = (403, 'pipelineruns.tekton.dev is forbidden: User "dev" cannot create resource')
    done = cli(BASE, kubeconfig)
    assert done.returncode == 1
    assert "forbidden" in done.stderr and 'User "dev" cannot create' in done.stderr
    assert "Traceback" not in done.stderr


def test_no_kubeconfig(tmp_path):
    done = cli(BASE, None)
    assert done.returncode == 2
    assert "kubeconfig" in done.stderr and "Traceback" not in done.stderr


def test_namespace_flag_and_kubeconfig_flag(fake, kubeconfig):
    fake.scenario = time_out
    env = env_for(None)
    done = subprocess.run([sys.executable, "-m", "actionproxy", *BASE, "--kubeconfig", str(kubeconfig),
                           "-n", "other"], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert "created in namespace other" in done.stdout, done.stderr
    assert any(r.startswith("POST /apis/tekton.dev/v1/namespaces/other/pipelineruns") for r in fake.requests)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_sigint_cancels_the_run(fake, kubeconfig, inherited):
    """Also when the CLI starts with SIGINT ignored, as a shell's background job does."""
    fake.scenario = hang
    proc = subprocess.Popen([sys.executable, "-m", "actionproxy", *BASE], env=env_for(kubeconfig),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            preexec_fn=_ignore_sigint if inherited == "ignored" else None)
    deadline = time.monotonic() + 30
    while not any("/pods/" in r for r in fake.requests) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any("/pods/" in r for r in fake.requests), fake.requests
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "cancelled" in err and "Traceback" not in err
    assert fake.patches and fake.patches[-1][1] == {"spec": {"status": "Cancelled"}}
    assert "merge-patch" in fake.patches[-1][0]
    pr = fake.objects["pipelineruns"]["actionproxy-function-x0001"]
    assert pr["spec"]["status"] == "Cancelled"


def test_keyboardinterrupt_from_hook_cancels(fake, kubeconfig, monkeypatch, capsys):
    from actionproxy.tools.tekton import cli as tcli
    from actionproxy.tools.tekton import client

    fake.scenario = succeed
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    args = tcli.parser().parse_args(BASE[1:])

    def hook(event, detail):
        if event == "log":
            raise KeyboardInterrupt

    assert tcli.submit(client, args, tcli.manifest(args), hook=hook) == 130
    assert fake.patches[-1][1] == {"spec": {"status": "Cancelled"}}
    assert "cancelled" in capsys.readouterr().err


def test_dry_run_matches_the_crd_and_the_pipeline(tmp_path):
    from crd_schema import load_crd_version, schema_errors, strict_validator
    from test_tekton import CRD_FILES, tekton_problems

    variants = [[], ["--deploy", "--service-name", "hello", "--docker-config-secret", "registry-push",
                     "--service-account", "actionproxy-builder", "--timeout", "30m",
                     "--source-revision", "v1", "--source-subdir", "fn", "--main", "handler"],
                ["--workspace-claim", "sources"], ["--workspace-size", "5Gi"]]
    validator = strict_validator(load_crd_version(CRD_FILES["PipelineRun"], "PipelineRun"))
    for extra in variants:
        done = cli([*BASE, *extra, "--dry-run"], None)
        assert done.returncode == 0, done.stderr
        doc = yaml.safe_load(done.stdout)
        assert doc["metadata"]["generateName"] == "actionproxy-function-"
        assert schema_errors(validator, doc) == []
        assert tekton_problems(doc) == []
    example = yaml.safe_load((REPO / "tekton/examples/pipelinerun-function.yaml").read_text())
    doc = yaml.safe_load(cli([*BASE, *variants[1], "--source-subdir", ".", "--source-revision", "main",
                              "--dry-run"], None).stdout)
    assert doc["spec"]["workspaces"] == example["spec"]["workspaces"]
    assert doc["spec"]["pipelineRef"] == example["spec"]["pipelineRef"]
    assert [p["name"] for p in doc["spec"]["params"]] == [p["name"] for p in example["spec"]["params"]]


def test_bad_arguments():
    done = cli([*BASE[:-4], "--runtime-image", "python:3.12", "--image", "x:1", "--dry-run"], None)
    assert done.returncode == 2 and "pinned by digest" in done.stderr
    done = cli([*BASE, "--deploy", "--dry-run"], None)
    assert done.returncode == 2 and "--service-name" in done.stderr


def test_serve_does_not_import_kubernetes():
    code = "import sys, actionproxy.cli; actionproxy.cli.parser(); print('kubernetes' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_missing_extra_is_explained(tmp_path):
    blocker = tmp_path / "kubernetes"
    blocker.mkdir()
    (blocker / "__init__.py").write_text("raise ImportError('blocked for the test')\n")
    env = env_for(None)
    env["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-m", "actionproxy", *BASE], env=env, capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert "pip install 'actionproxy[tools]'" in done.stderr
