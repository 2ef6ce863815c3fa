"""Submit a PipelineRun and follow it like `tkn pipelinerun logs -f` (plain `kubernetes` client).

Importing this module imports `kubernetes`; callers import it lazily.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

GROUP, VERSION = "tekton.dev", "v1"
PULL_FAILURES = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class ClientError(Exception):
    """A failure worth one clear line (and an exit code), not a traceback."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class Gone(Exception):
    """The watch's resourceVersion expired (410): re-list and resume."""


def load_config(kubeconfig: str | None = None, context: str | None = None) -> str:
    """Load kubeconfig (or the in-cluster config); return the default namespace."""
    errors = []
    explicit = kubeconfig
    # $KUBECONFIG as it is now (the kubernetes package reads it once, at import time)
    kubeconfig = kubeconfig or os.environ.get("KUBECONFIG") or None
    try:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context)
        try:
            _, active = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            if context:
                contexts, _ = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
                active = next((c for c in contexts if c["name"] == context), active)
            return (active or {}).get("context", {}).get("namespace") or "default"
        except Exception:  # noqa: BLE001 - the namespace is a nicety
            return "default"
    except (k8s_config.ConfigException, OSError, TypeError, ValueError) as exc:
        errors.append(str(exc) or type(exc).__name__)
    if explicit is None:
        try:
            k8s_config.load_incluster_config()
            try:
                with open(SA_NAMESPACE) as f:
                    return f.read().strip() or "default"
            except OSError:
                return "default"
        except k8s_config.ConfigException as exc:
            errors.append(str(exc))
    where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    raise ClientError(f"no usable kubeconfig ({where}) and not running in a cluster: "
                      f"{'; '.join(errors)}; set KUBECONFIG or pass --kubeconfig", 2)


def _status(exc: ApiException) -> dict:
    try:
        return json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}


def api_error(exc: ApiException, what: str) -> ClientError:
    body = _status(exc)
    message = body.get("message") or exc.reason or ""
    if exc.status == 404 and what.startswith("pipelineruns") or exc.status == 404 and "the server could not find" in message:
        kind = (body.get("details") or {}).get("kind")
        if kind == "namespaces":
            return ClientError(f"namespace not found: {message}", 1)
        return ClientError("Tekton Pipelines is not installed on this cluster (the tekton.dev/v1 "
                           f"pipelineruns resource answered 404: {message or 'not found'}); install "
                           "Tekton Pipelines >= 0.59 and the actionproxy Tasks/Pipeline (tekton/)", 1)
    if exc.status == 403:
        return ClientError(f"forbidden: {what}: {message} (check your RBAC: the user needs "
                           "create/get/list/watch/patch on pipelineruns, get/list/watch on taskruns, "
                           "get on pods and pods/log)", 1)
    if exc.status == 401:
        return ClientError(f"unauthorized: {what}: {message} (check your kubeconfig credentials)", 1)
    return ClientError(f"Kubernetes API error {exc.status} on {what}: {message}", 1)


def condition(obj: dict) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Succeeded":
            return c
    return {}


def done(obj: dict) -> bool:
    return condition(obj).get("status") in ("True", "False")


class Follower:
    """Creates and follows one PipelineRun. `out` gets progress and logs, `err` the errors."""

    def __init__(self, namespace: str, out=None, err=None, watch_timeout: int = 300,
                 poll: float = 0.5, pod_timeout: float = 600, log_tail: int = 10):
        self.ns = namespace
        self.custom = k8s.CustomObjectsApi()
        self.core = k8s.CoreV1Api()
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.watch_timeout = watch_timeout
        self.poll = poll
        self.pod_timeout = pod_timeout
        self.log_tail = log_tail
        self.name: str | None = None
        self.started: set[str] = set()
        self.logged: set[str] = set()
        self.finished: set[str] = set()
        self.tails: dict[str, collections.deque] = {}
        self.hook = None  # called with (event, detail) at each step: tests raise KeyboardInterrupt from it

    # ------------------------------------------------------------------ output
    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _hook(self, event: str, detail=None) -> None:
        if self.hook is not None:
            self.hook(event, detail)

    # ------------------------------------------------------------------ API calls
    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise api_error(exc, what) from None
        except Exception as exc:  # urllib3 connection errors and the like
            if type(exc).__module__.startswith("urllib3") or isinstance(exc, OSError):
                host = k8s.Configuration.get_default_copy().host
                raise ClientError(f"cannot reach the Kubernetes API at {host}: {exc}", 1) from None
            raise

    def create(self, body: dict) -> dict:
        pr = self._call("pipelineruns (create)", self.custom.create_namespaced_custom_object,
                        GROUP, VERSION, self.ns, "pipelineruns", body)
        self.name = pr["metadata"]["name"]
        return pr

    def cancel(self) -> None:
        if self.name:
            self._call(f"pipelineruns/{self.name} (cancel)", self.custom.patch_namespaced_custom_object,
                       GROUP, VERSION, self.ns, "pipelineruns", self.name, {"spec": {"status": "Cancelled"}})

    def get_pr(self) -> dict:
        return self._call(f"pipelineruns/{self.name}", self.custom.get_namespaced_custom_object,
                          GROUP, VERSION, self.ns, "pipelineruns", self.name)

    def list_taskruns(self) -> list[dict]:
        got = self._call("taskruns (list)", self.custom.list_namespaced_custom_object,
                         GROUP, VERSION, self.ns, "taskruns",
                         label_selector=f"tekton.dev/pipelineRun={self.name}")
        items = got.get("items") or []
        items.sort(key=lambda t: ((t.get("status") or {}).get("startTime") or "",
                                  t["metadata"].get("creationTimestamp") or "", t["metadata"]["name"]))
        return items

    def get_taskrun(self, name: str) -> dict:
        return self._call(f"taskruns/{name}", self.custom.get_namespaced_custom_object,
                          GROUP, VERSION, self.ns, "taskruns", name)

    def _list(self, plural: str, selector: dict) -> tuple[list[dict], str]:
        got = self._call(f"{plural} (list)", self.custom.list_namespaced_custom_object,
                         GROUP, VERSION, self.ns, plural, **selector)
        return got.get("items") or [], (got.get("metadata") or {}).get("resourceVersion") or ""

    def watch(self, plural: str, selector: dict, rv: str):
        """Yield (type, object) from one watch request; raise Gone on 410."""
        try:
            resp = self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.ns, plural, watch=True, resource_version=rv or None,
                allow_watch_bookmarks=True, timeout_seconds=self.watch_timeout,
                _preload_content=False, **selector)
        except ApiException as exc:
            if exc.status == 410:
                raise Gone() from None
            raise api_error(exc, f"{plural} (watch)") from None
        try:
            for line in iter_resp_lines(resp):
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone()
                    raise ClientError(f"watch on {plural} failed: {obj.get('code')} {obj.get('message')}")
                yield event.get("type"), obj
        finally:
            resp.release_conn()

    def follow_objects(self, plural: str, selector: dict, rv: str = ""):
        """Objects as they change, forever (the caller stops): list, then watch; re-list on 410."""
        relist = not rv
        while True:
            if relist:
                items, rv = self._list(plural, selector)
                for item in items:
                    yield item
                relist = False
            try:
                for kind, obj in self.watch(plural, selector, rv):
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if kind == "BOOKMARK":
                        continue
                    yield obj
            except Gone:
                self._hook("gone", plural)
                relist = True

    # ------------------------------------------------------------------ following
    def follow(self) -> dict:
        """Follow the created PipelineRun to the end; return its final object."""
        selector = {"field_selector": f"metadata.name={self.name}"}
        for pr in self.follow_objects("pipelineruns", selector):
            if pr.get("metadata", {}).get("name") != self.name:
                continue
            self._hook("pipelinerun", pr)
            self.taskruns(final=done(pr))
            if done(pr):
                return pr
        raise AssertionError("unreachable")

    def taskruns(self, final: bool) -> None:
        for tr in self.list_taskruns():
            name = tr["metadata"]["name"]
            task = self.task_name(tr)
            if name not in self.started:
                self.started.add(name)
                self.say(f"[{task}] started (taskrun {name})")
            if name not in self.logged:
                tr = self.stream(tr)
                # all steps have ended once their logs have: the TaskRun completes right after
                tr = self.wait_taskrun(tr, done)
            if name not in self.finished and done(tr):
                self.finish(tr)

    @staticmethod
    def task_name(tr: dict) -> str:
        labels = tr["metadata"].get("labels") or {}
        return (labels.get("tekton.dev/pipelineTask") or ((tr.get("spec") or {}).get("taskRef") or {}).get("name")
                or tr["metadata"]["name"])

    def wait_taskrun(self, tr: dict, until) -> dict:
        name = tr["metadata"]["name"]
        if until(tr):
            return tr
        selector = {"field_selector": f"metadata.name={name}"}
        for obj in self.follow_objects("taskruns", selector):
            if obj.get("metadata", {}).get("name") == name and until(obj):
                return obj
        raise AssertionError("unreachable")

    def stream(self, tr: dict) -> dict:
        """Stream the TaskRun pod's step logs in order; return the TaskRun as last seen."""
        name, task = tr["metadata"]["name"], self.task_name(tr)
        tr = self.wait_taskrun(tr, lambda t: (t.get("status") or {}).get("podName") or done(t))
        pod_name = (tr.get("status") or {}).get("podName")
        if not pod_name:
            self.logged.add(name)
            return tr
        pod = self.wait_pod(tr, pod_name)
        tail = self.tails.setdefault(name, collections.deque(maxlen=self.log_tail))
        steps = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []
                 if c["name"].startswith("step-")]
        for container in steps:
            step = container[len("step-"):]
            self._hook("log", (task, step))
            try:
                resp = self.core.read_namespaced_pod_log(pod_name, self.ns, container=container,
                                                         follow=True, _preload_content=False)
            except ApiException as exc:
                if exc.status in (400, 404):  # pod gone (pruned) or container never started
                    self.say(f"[{task} : {step}] (no logs: {_status(exc).get('message') or exc.reason})")
                    continue
                raise api_error(exc, f"pods/{pod_name}/log") from None
            try:
                for line in iter_resp_lines(resp):
                    tail.append(f"{step}: {line}")
                    self.say(f"[{task} : {step}] {line}")
            finally:
                resp.release_conn()
        self.logged.add(name)
        return self.get_taskrun(name)

    def wait_pod(self, tr: dict, pod_name: str) -> dict:
        """Poll the pod until its logs can be read; image pull failures are errors."""
        name, task = tr["metadata"]["name"], self.task_name(tr)
        deadline = time.monotonic() + self.pod_timeout
        while True:
            try:
                resp = self.core.read_namespaced_pod(pod_name, self.ns, _preload_content=False)
                pod = json.loads(resp.data)
            except ApiException as exc:
                if exc.status != 404:
                    raise api_error(exc, f"pods/{pod_name}") from None
                pod = None
            if pod is not None:
                status = pod.get("status") or {}
                for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
                    waiting = (cs.get("state") or {}).get("waiting") or {}
                    if waiting.get("reason") in PULL_FAILURES:
                        image = cs.get("image") or "?"
                        raise ClientError(f"[{task}] cannot pull image {image} for {cs.get('name')}: "
                                          f"{waiting.get('reason')}: {waiting.get('message') or ''}".rstrip(": "))
                if status.get("phase") in ("Running", "Succeeded", "Failed"):
                    return pod
            tr = self.get_taskrun(name)
            reason = condition(tr).get("reason")
            if reason == "TaskRunImagePullFailed":
                raise ClientError(f"[{task}] image pull failed: {condition(tr).get('message')}")
            if done(tr) and pod is not None:
                return pod
            if done(tr):
                return {"spec": {"containers": []}}
            if time.monotonic() > deadline:
                raise ClientError(f"[{task}] pod {pod_name} did not start within {self.pod_timeout:.0f}s")
            time.sleep(self.poll)

    def finish(self, tr: dict) -> None:
        name, task = tr["metadata"]["name"], self.task_name(tr)
        self.finished.add(name)
        cond = condition(tr)
        if cond.get("status") == "True":
            self.say(f"[{task}] succeeded")
            return
        self.say(f"[{task}] failed: {cond.get('reason')}: {cond.get('message') or ''}".rstrip(": "))
        for step in (tr.get("status") or {}).get("steps") or []:
            term = step.get("terminated") or {}
            if term.get("exitCode") not in (None, 0):
                self.say(f"[{task}] step {step.get('name')} exited with code {term['exitCode']}"
                         f" ({term.get('reason') or 'Error'})")
                tail = [line for line in self.tails.get(name, ()) if line.startswith(f"{step.get('name')}: ")]
                if tail:
                    self.say(f"[{task}] last log lines of step {step.get('name')}:")
                    for line in tail:
                        self.say(f"    {line.split(': ', 1)[1]}")
                break


def report(pr: dict, follower: Follower) -> int:
    """The final lines: results on success, the reason on failure. Returns the exit code."""
    cond = condition(pr)
    name = pr["metadata"]["name"]
    if cond.get("status") == "True":
        follower.say(f"PipelineRun {name} succeeded")
        for result in (pr.get("status") or {}).get("results") or []:
            value = result.get("value")
            follower.say(f"{result.get('name')}={value if isinstance(value, str) else json.dumps(value)}")
        return 0
    reason, message = cond.get("reason"), cond.get("message") or ""
    if reason == "PipelineRunTimeout":
        print(f"actionproxy build: PipelineRun {name} timed out: {message}", file=follower.err)
    elif reason in ("Cancelled", "StoppedRunFinally", "CancelledRunFinally"):
        print(f"actionproxy build: PipelineRun {name} was cancelled: {message}", file=follower.err)
    else:
        print(f"actionproxy build: PipelineRun {name} failed ({reason}): {message}", file=follower.err)
    return 1
