"""Tekton manifests under tekton/ (Tasks, the Pipeline, example PipelineRun/TaskRun), validated
offline against the real Tekton CRDs (tektoncd/pipeline `config/300-crds`, saved in
tests/tools/schemas/, see SOURCES.md there) with unknown fields rejected, plus a lint for what Tekton's
admission webhook (or the run) would reject and a CRD schema cannot say.

Schema: `spec.versions[name=v1].schema.openAPIV3Schema` of each CRD, through the strict
transform of tests/crd_schema.py (shared with test_knative_manifests.py). The CRDs mark
embedded specs `x-kubernetes-preserve-unknown-fields` (recursive types), so a Pipeline's
`tasks[].taskSpec`, a PipelineRun's `pipelineSpec` and a TaskRun's `taskSpec` are validated
here against the Task/Pipeline `spec` sub-schema themselves.

Lint (`tekton_problems`):
- every `$(params.X)` is declared by the Task/Pipeline it appears in (a Pipeline's embedded
  `taskSpec` is its own scope);
- no `$(params.*)` inside a `script:` (parameters reach scripts through env vars);
- `$(results.R.path)` names a declared result; `$(tasks.T.results.R)` names a task of the
  Pipeline and a result that task's Task produces;
- workspaces line up: a pipeline task binds only workspaces its Task declares, to workspaces the
  Pipeline declares, and binds every non-optional one; a run binds the Pipeline's/Task's
  required workspaces and nothing unknown;
- a pipeline task passes only params its Task declares and every param without a default;
- step names unique in a Task, task names unique in a Pipeline (`tasks` + `finally`),
  `runAfter` names existing tasks.
Catalog tasks fetched by a resolver are described by `CATALOG` (their declared params,
workspaces and results at the pinned versions; spec §2.6).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from crd_schema import load_crd_version, schema_errors, strict, strict_validator

REPO = Path(__file__).resolve().parents[2]
TEKTON = REPO / "tekton"
SCHEMAS = REPO / "tests" / "tools" / "schemas"  # vendored upstream CRDs, see SOURCES.md there
CRD_FILES = {kind: SCHEMAS / f"tekton-pipeline-crd-{kind.lower()}.yaml"
             for kind in ("Task", "Pipeline", "PipelineRun", "TaskRun")}

PARAM_REF = re.compile(r"\$\(params\.([A-Za-z0-9_.-]+?)(?:\[[^\]]*\])?\)|\$\(params\[['\"]([^'\"]+)['\"]\]\)")
RESULT_PATH_REF = re.compile(r"\$\(results\.([A-Za-z0-9_.-]+?)\.path\)")
TASK_RESULT_REF = re.compile(r"\$\(tasks\.([A-Za-z0-9_-]+)\.results\.([A-Za-z0-9_.-]+?)(?:\[[^\]]*\])?\)")

# Remote catalog tasks at the pinned versions (spec §2.6): what they declare.
CATALOG = {
    "git-clone": {
        "params": {"url": False, "revision": True, "refspec": True, "submodules": True, "depth": True,
                   "sslVerify": True, "crtFileName": True, "subdirectory": True,
                   "sparseCheckoutDirectories": True, "deleteExisting": True, "httpProxy": True,
                   "httpsProxy": True, "noProxy": True, "verbose": True, "gitInitImage": True,
                   "userHome": True},  # name -> has a default
        "workspaces": {"output": False, "ssh-directory": True, "basic-auth": True,
                       "ssl-ca-directory": True},  # name -> optional
        "results": {"commit", "url", "committer-date"},
    },
    "buildah": {
        "params": {"IMAGE": False, "BUILDER_IMAGE": True, "STORAGE_DRIVER": True, "DOCKERFILE": True,
                   "CONTEXT": True, "TLSVERIFY": True, "FORMAT": True, "BUILD_EXTRA_ARGS": True,
                   "PUSH_EXTRA_ARGS": True, "SKIP_PUSH": True, "BUILD_ARGS": True},
        "workspaces": {"source": False, "sslcertdir": True, "dockerconfig": True},
        "results": {"IMAGE_DIGEST", "IMAGE_URL"},
    },
}
EMBEDDED_TASK_EXTRA = {"apiVersion", "kind", "metadata", "spec"}  # EmbeddedTask beyond TaskSpec


# ------------------------------------------------------------------------------- loading
def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(TEKTON.rglob("*.y*ml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                found.append((f"{path.relative_to(REPO)}#{index}", doc))
    return found


MANIFESTS = manifests()


def by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in MANIFESTS
            if doc.get("kind") == kind and "name" in doc.get("metadata", {})}


@pytest.fixture(scope="session")
def crds() -> dict[str, dict]:
    missing = [str(f) for f in CRD_FILES.values() if not f.is_file()]
    if missing:
        pytest.fail(f"Tekton CRDs missing: {missing}; they are vendored in tests/tools/schemas/ "
                    f"(see SOURCES.md there)", pytrace=False)
    return {kind: load_crd_version(path, kind) for kind, path in CRD_FILES.items()}


@pytest.fixture(scope="session")
def validators(crds):
    return {kind: strict_validator(schema) for kind, schema in crds.items()}


def spec_validator(crds, kind: str):
    """A validator for a bare `spec` of `kind` (for embedded taskSpec / pipelineSpec)."""
    from crd_schema import KubeValidator
    schema = strict(copy.deepcopy(crds[kind]["properties"]["spec"]))
    return KubeValidator(schema)


def validate(doc: dict, crds, validators) -> list[str]:
    kind = doc.get("kind")
    if doc.get("apiVersion") != "tekton.dev/v1":
        return [f"<root>: apiVersion must be tekton.dev/v1, not {doc.get('apiVersion')!r}"]
    if kind not in validators:
        return [f"<root>: unexpected kind {kind!r}"]
    errors = schema_errors(validators[kind], doc)
    spec = doc.get("spec") or {}
    embedded = []  # (where, spec, kind)
    if kind == "Pipeline":
        for group in ("tasks", "finally"):
            for i, task in enumerate(spec.get(group) or []):
                if isinstance(task.get("taskSpec"), dict):
                    embedded.append((f"spec.{group}.{i}.taskSpec", task["taskSpec"], "Task"))
    if kind == "PipelineRun" and isinstance(spec.get("pipelineSpec"), dict):
        embedded.append(("spec.pipelineSpec", spec["pipelineSpec"], "Pipeline"))
        for group in ("tasks", "finally"):
            for i, task in enumerate(spec["pipelineSpec"].get(group) or []):
                if isinstance(task.get("taskSpec"), dict):
                    embedded.append((f"spec.pipelineSpec.{group}.{i}.taskSpec", task["taskSpec"], "Task"))
    if kind == "TaskRun" and isinstance(spec.get("taskSpec"), dict):
        embedded.append(("spec.taskSpec", spec["taskSpec"], "Task"))
    for where, sub, sub_kind in embedded:
        if sub_kind == "Task":
            sub = {k: v for k, v in sub.items() if k not in EMBEDDED_TASK_EXTRA}
        errors += [f"{where}.{e}" for e in schema_errors(spec_validator(crds, sub_kind), sub)]
    return errors


# ------------------------------------------------------------------------------- the lint
def strings(node, path=""):
    """(path, key, string) for every string in a tree; key is the mapping key holding it."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, str):
                yield f"{path}.{key}", key, value
            else:
                yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, str):
                yield f"{path}.{i}", None, value
            else:
                yield from strings(value, f"{path}.{i}")


def param_refs(text: str) -> list[str]:
    return [a or b for a, b in PARAM_REF.findall(text)]


def declared(items) -> dict[str, dict]:
    return {item["name"]: item for item in items or [] if isinstance(item, dict) and "name" in item}


def duplicates(items) -> list[str]:
    names = [item.get("name") for item in items or [] if isinstance(item, dict)]
    return sorted({n for n in names if names.count(n) > 1})


def task_spec_problems(spec: dict, where: str) -> list[str]:
    problems = []
    params = declared(spec.get("params"))
    results = declared(spec.get("results"))
    for name in duplicates(spec.get("steps")):
        problems.append(f"{where}: duplicate step name {name!r}")
    for name in duplicates(spec.get("params")):
        problems.append(f"{where}: duplicate param {name!r}")
    for path, key, text in strings({k: v for k, v in spec.items() if k != "params"}):
        for ref in param_refs(text):
            if ref.split(".")[0] not in params:
                problems.append(f"{where}{path}: $(params.{ref}) is not declared")
        if key == "script" and param_refs(text):
            problems.append(f"{where}{path}: $(params.*) inside script: pass it through env instead")
        for ref in RESULT_PATH_REF.findall(text):
            if ref not in results:
                problems.append(f"{where}{path}: $(results.{ref}.path) is not a declared result")
    return problems


def describe_task(task: dict, tasks: dict[str, dict]) -> dict | None:
    """{params: {name: has_default}, workspaces: {name: optional}, results: set} of a pipeline task."""
    spec = None
    if isinstance(task.get("taskSpec"), dict):
        spec = task["taskSpec"]
    elif (ref := task.get("taskRef") or {}).get("name") in tasks:
        spec = tasks[ref["name"]]["spec"]
    elif ref.get("resolver"):
        rparams = {p["name"]: p.get("value") for p in ref.get("params") or []}
        name = rparams.get("name") or Path(str(rparams.get("pathInRepo", ""))).stem
        return CATALOG.get(name)
    if spec is None:
        return None
    return {"params": {n: "default" in p for n, p in declared(spec.get("params")).items()},
            "workspaces": {n: bool(w.get("optional")) for n, w in declared(spec.get("workspaces")).items()},
            "results": set(declared(spec.get("results")))}


def pipeline_spec_problems(spec: dict, where: str, tasks: dict[str, dict]) -> list[str]:
    problems = []
    params = declared(spec.get("params"))
    workspaces = declared(spec.get("workspaces"))
    all_tasks = (spec.get("tasks") or []) + (spec.get("finally") or [])
    for name in duplicates(all_tasks):
        problems.append(f"{where}: duplicate task name {name!r}")
    names = {t.get("name") for t in all_tasks}
    described = {t.get("name"): describe_task(t, tasks) for t in all_tasks}
    # params and result references, outside embedded task specs
    stripped = copy.deepcopy({k: v for k, v in spec.items() if k != "params"})
    for group in ("tasks", "finally"):
        for t in stripped.get(group) or []:
            t.pop("taskSpec", None)
    for path, key, text in strings(stripped):
        for ref in param_refs(text):
            if ref.split(".")[0] not in params:
                problems.append(f"{where}{path}: $(params.{ref}) is not declared")
        for task_name, result in TASK_RESULT_REF.findall(text):
            if task_name not in names:
                problems.append(f"{where}{path}: $(tasks.{task_name}...) names no task")
            elif described.get(task_name) is not None and result not in described[task_name]["results"]:
                problems.append(f"{where}{path}: task {task_name!r} produces no result {result!r}")
    for group in ("tasks", "finally"):
        for i, t in enumerate(spec.get(group) or []):
            here = f"{where}.{group}.{i}({t.get('name')})"
            for after in t.get("runAfter") or []:
                if after not in names:
                    problems.append(f"{here}: runAfter {after!r} names no task")
            if isinstance(t.get("taskSpec"), dict):
                problems += task_spec_problems(t["taskSpec"], f"{here}.taskSpec")
            info = described.get(t.get("name"))
            bound = declared(t.get("workspaces"))
            for name, binding in bound.items():
                if binding.get("workspace", name) not in workspaces:
                    problems.append(f"{here}: workspace {name!r} bound to undeclared "
                                    f"pipeline workspace {binding.get('workspace')!r}")
            if info is None:
                problems.append(f"{here}: cannot tell which Task this is")
                continue
            for name in bound:
                if name not in info["workspaces"]:
                    problems.append(f"{here}: the Task declares no workspace {name!r}")
            for name, optional in info["workspaces"].items():
                if not optional and name not in bound:
                    problems.append(f"{here}: required workspace {name!r} not bound")
            passed = declared(t.get("params"))
            for name in passed:
                if name not in info["params"]:
                    problems.append(f"{here}: the Task declares no param {name!r}")
            for name, has_default in info["params"].items():
                if not has_default and name not in passed:
                    problems.append(f"{here}: required param {name!r} not passed")
    for i, result in enumerate(spec.get("results") or []):
        if isinstance(result.get("value"), str) and not TASK_RESULT_REF.search(result["value"]):
            problems.append(f"{where}.results.{i}: value references no task result")
    return problems


def run_problems(spec: dict, where: str, target: dict | None) -> list[str]:
    """A PipelineRun/TaskRun against the Pipeline/Task it refers to (when that is known)."""
    if target is None:
        return []
    problems = []
    params = declared(target.get("params"))
    passed = declared(spec.get("params"))
    for name in passed:
        if name not in params:
            problems.append(f"{where}: param {name!r} is not declared")
    for name, p in params.items():
        if "default" not in p and name not in passed:
            problems.append(f"{where}: required param {name!r} not passed")
    workspaces = declared(target.get("workspaces"))
    bound = declared(spec.get("workspaces"))
    for name in bound:
        if name not in workspaces:
            problems.append(f"{where}: workspace {name!r} is not declared")
    for name, w in workspaces.items():
        if not w.get("optional") and name not in bound:
            problems.append(f"{where}: required workspace {name!r} not bound")
    return problems


def tekton_problems(doc: dict, tasks: dict[str, dict] | None = None,
                    pipelines: dict[str, dict] | None = None) -> list[str]:
    tasks = by_kind("Task") if tasks is None else tasks
    pipelines = by_kind("Pipeline") if pipelines is None else pipelines
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    if kind == "Task":
        return task_spec_problems(spec, "spec")
    if kind == "Pipeline":
        return pipeline_spec_problems(spec, "spec", tasks)
    if kind == "PipelineRun":
        if isinstance(spec.get("pipelineSpec"), dict):
            target = spec["pipelineSpec"]
            problems = pipeline_spec_problems(target, "spec.pipelineSpec", tasks)
        else:
            name = (spec.get("pipelineRef") or {}).get("name")
            target = pipelines[name]["spec"] if name in pipelines else None
            problems = [] if target or not name else [f"spec.pipelineRef: no Pipeline {name!r} under tekton/"]
        return problems + run_problems(spec, "spec", target)
    if kind == "TaskRun":
        if isinstance(spec.get("taskSpec"), dict):
            target = spec["taskSpec"]
            problems = task_spec_problems(target, "spec.taskSpec")
        else:
            name = (spec.get("taskRef") or {}).get("name")
            target = tasks[name]["spec"] if name in tasks else None
            problems = [] if target or not name else [f"spec.taskRef: no Task {name!r} under tekton/"]
        return problems + run_problems(spec, "spec", target)
    return [f"unexpected kind {kind!r}"]


def load(name: str) -> dict:
    return yaml.safe_load((TEKTON / name).read_text())


# ------------------------------------------------------------------------------- the tests
def test_the_expected_manifests_exist():
    kinds = sorted((doc["kind"], doc["metadata"].get("name") or doc["metadata"].get("generateName"))
                   for _, doc in MANIFESTS)
    assert ("Task", "actionproxy-build-runtime") in kinds
    assert ("Task", "actionproxy-bake") in kinds
    assert ("Pipeline", "actionproxy-function") in kinds
    assert ("PipelineRun", "actionproxy-function-") in kinds
    assert (TEKTON / "README.md").is_file()


@pytest.mark.parametrize("where,doc", MANIFESTS, ids=[w for w, _ in MANIFESTS])
def test_manifest_matches_the_crd_strictly(where, doc, crds, validators):
    assert validate(doc, crds, validators) == []


@pytest.mark.parametrize("where,doc", MANIFESTS, ids=[w for w, _ in MANIFESTS])
def test_manifest_passes_the_webhook_lint(where, doc):
    assert tekton_problems(doc) == []


def test_pipeline_shape():
    spec = load("pipeline-function.yaml")["spec"]
    params = declared(spec["params"])
    assert params["source-subdir"]["default"] == "." and params["main"]["default"] == "main"
    assert params["deploy"]["default"] == "false"
    for name in ("source-url", "source-revision", "runtime", "target", "runtime-image", "image", "service-name"):
        assert name in params
    assert declared(spec["workspaces"])["dockerconfig"]["optional"] is True
    assert {r["name"]: r["value"] for r in spec["results"]}.items() >= {
        "IMAGE_URL": "$(tasks.build.results.IMAGE_URL)",
        "IMAGE_DIGEST": "$(tasks.build.results.IMAGE_DIGEST)"}.items()
    tasks = declared(spec["tasks"])
    assert list(tasks) == ["fetch", "bake", "build", "deploy"]
    for name in ("fetch", "build"):  # catalog tasks through a resolver, pinned
        ref = tasks[name]["taskRef"]
        rparams = {p["name"]: p["value"] for p in ref["params"]}
        assert ref["resolver"] in ("git", "hub", "bundles", "http")
        assert rparams.get("revision") or rparams.get("version") or rparams.get("digest")
        assert rparams.get("revision", "x") not in ("main", "master", "HEAD")
    assert tasks["deploy"]["when"] == [{"input": "$(params.deploy)", "operator": "in", "values": ["true"]}]
    script = tasks["deploy"]["taskSpec"]["steps"][0]["script"]
    assert "@$IMAGE_DIGEST" in script and "serving.knative.dev/v1" in script
    assert {p["value"] for p in tasks["deploy"]["params"]} >= {"$(tasks.build.results.IMAGE_DIGEST)"}


def test_bake_task_runs_actionproxy_bake_in_the_runtime_image():
    spec = load("task-bake.yaml")["spec"]
    assert set(declared(spec["params"])) >= {"runtime-image", "runtime", "target", "main", "source-subdir"}
    step = spec["steps"][0]
    assert step["image"] == "$(params.runtime-image)"
    assert "actionproxy bake" in step["script"] and "@sha256:" in step["script"]


def test_build_runtime_task_has_chains_results():
    spec = load("task-build-runtime.yaml")["spec"]
    assert set(declared(spec["results"])) == {"IMAGE_URL", "IMAGE_DIGEST"}
    assert "runtime" in declared(spec["params"])


# ------------------------------------------------------------------------------- negatives
def test_schema_rejects_unknown_fields_and_v1beta1isms(crds, validators):
    task = load("task-bake.yaml")
    bad = copy.deepcopy(task)
    bad["spec"]["stepz"] = bad["spec"].pop("steps")
    assert any("stepz" in e for e in validate(bad, crds, validators))
    bad = copy.deepcopy(task)
    bad["spec"]["steps"][0]["resources"] = {"limits": {"memory": "1Gi"}}  # v1beta1: computeResources
    assert any("resources" in e for e in validate(bad, crds, validators))
    bad = copy.deepcopy(task)
    bad["spec"]["steps"] = {"bake": bad["spec"]["steps"][0]}
    assert any("is not of type 'array'" in e for e in validate(bad, crds, validators))
    bad = copy.deepcopy(task)
    bad["metadata"]["label"] = {"a": "b"}
    assert any("label" in e for e in validate(bad, crds, validators))
    bad = copy.deepcopy(task)
    bad["apiVersion"] = "tekton.dev/v1beta1"
    assert validate(bad, crds, validators)
    run = load("examples/pipelinerun-function.yaml")
    bad = copy.deepcopy(run)
    bad["spec"]["serviceAccountName"] = "x"
    bad["spec"]["timeout"] = "1h"
    errors = validate(bad, crds, validators)
    assert any("serviceAccountName" in e for e in errors) and any("timeout" in e for e in errors)


def test_schema_checks_embedded_task_specs(crds, validators):
    pipeline = load("pipeline-function.yaml")
    bad = copy.deepcopy(pipeline)
    deploy = declared(bad["spec"]["tasks"])["deploy"]
    deploy["taskSpec"]["steps"][0]["imagePullPolicyy"] = "Always"
    errors = validate(bad, crds, validators)
    assert any("taskSpec" in e and "imagePullPolicyy" in e for e in errors), errors
    # the CRD alone (preserve-unknown) lets it through
    assert schema_errors(validators["Pipeline"], bad) == []


def test_lint_undeclared_param():
    task = load("task-bake.yaml")
    task["spec"]["steps"][0]["env"].append({"name": "X", "value": "$(params.no-such-param)"})
    assert any("no-such-param" in p for p in tekton_problems(task))
    pipeline = load("pipeline-function.yaml")
    declared(pipeline["spec"]["tasks"])["bake"]["params"][0]["value"] = "$(params.runtime-imagee)"
    assert any("runtime-imagee" in p for p in tekton_problems(pipeline))


def test_lint_param_inside_script():
    task = load("task-bake.yaml")
    task["spec"]["steps"][0]["script"] += 'echo "$(params.main)"\n'
    assert any("inside script" in p for p in tekton_problems(task))
    pipeline = load("pipeline-function.yaml")
    declared(pipeline["spec"]["tasks"])["deploy"]["taskSpec"]["steps"][0]["script"] += "echo $(params.service-name)\n"
    assert any("inside script" in p for p in tekton_problems(pipeline))


def test_lint_results_nobody_produces():
    pipeline = load("pipeline-function.yaml")
    pipeline["spec"]["results"][1]["value"] = "$(tasks.build.results.DIGEST)"
    assert any("no result 'DIGEST'" in p for p in tekton_problems(pipeline))
    pipeline = load("pipeline-function.yaml")
    pipeline["spec"]["results"][0]["value"] = "$(tasks.push.results.IMAGE_URL)"
    assert any("names no task" in p for p in tekton_problems(pipeline))
    task = load("task-bake.yaml")
    task["spec"]["steps"][0]["script"] += 'echo x > "$(results.CONTEXTS.path)"\n'
    assert any("CONTEXTS" in p for p in tekton_problems(task))


def test_lint_workspaces_line_up():
    pipeline = load("pipeline-function.yaml")
    declared(pipeline["spec"]["tasks"])["bake"]["workspaces"][0]["workspace"] = "sources"
    assert any("undeclared pipeline workspace 'sources'" in p for p in tekton_problems(pipeline))
    pipeline = load("pipeline-function.yaml")
    declared(pipeline["spec"]["tasks"])["bake"]["workspaces"][0]["name"] = "src"
    problems = tekton_problems(pipeline)
    assert any("declares no workspace 'src'" in p for p in problems)
    assert any("required workspace 'source' not bound" in p for p in problems)
    pipeline = load("pipeline-function.yaml")
    declared(pipeline["spec"]["tasks"])["fetch"]["workspaces"][0]["name"] = "outputs"  # catalog git-clone
    assert any("declares no workspace 'outputs'" in p for p in tekton_problems(pipeline))
    run = load("examples/pipelinerun-function.yaml")
    run["spec"]["workspaces"] = run["spec"]["workspaces"][1:]
    assert any("required workspace 'source'" in p for p in tekton_problems(run))


def test_lint_params_passed_line_up():
    pipeline = load("pipeline-function.yaml")
    declared(pipeline["spec"]["tasks"])["build"]["params"].append({"name": "IMAGES", "value": "x"})
    assert any("no param 'IMAGES'" in p for p in tekton_problems(pipeline))
    run = load("examples/pipelinerun-function.yaml")
    run["spec"]["params"] = [p for p in run["spec"]["params"] if p["name"] != "image"]
    assert any("required param 'image'" in p for p in tekton_problems(run))


def test_lint_duplicate_steps_and_tasks():
    task = load("task-bake.yaml")
    task["spec"]["steps"].append(copy.deepcopy(task["spec"]["steps"][0]))
    assert any("duplicate step name 'bake'" in p for p in tekton_problems(task))
    pipeline = load("pipeline-function.yaml")
    pipeline["spec"]["finally"] = [copy.deepcopy(declared(pipeline["spec"]["tasks"])["bake"])]
    assert any("duplicate task name 'bake'" in p for p in tekton_problems(pipeline))
