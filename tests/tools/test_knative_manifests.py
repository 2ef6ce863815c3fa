"""Knative Service manifests: deploy/knative/*.yaml and `actionproxy ksvc` output, validated
offline against the real Service CRD of Knative Serving (knative-v1.23.0), with unknown fields
rejected, plus the admission-webhook rules that a CRD schema cannot express; and the same for
the Knative Eventing Trigger that `ksvc --trigger-broker` writes after the Service (see "The
Trigger" below).

The schema
----------
`tests/tools/schemas/knative-serving-crd-service.yaml` is the CustomResourceDefinition copied byte for
byte from knative/serving (see tests/tools/schemas/SOURCES.md). We use `spec.versions[name=v1, served].schema.openAPIV3Schema`,
the structural schema the kube-apiserver enforces, and validate with `jsonschema` (Draft 4, the
JSON Schema that OpenAPI 3.0 schemas derive from) after this transform:

1. Unknown fields are rejected: every object schema with `properties`, no `additionalProperties`
   and no `x-kubernetes-preserve-unknown-fields: true` gets `additionalProperties: false`. This
   is what `kubectl apply --validate=strict` (server-side field validation) does; without it the
   apiserver silently *prunes* unknown fields, so a typo such as `portz` would just vanish. Where
   the CRD says `x-kubernetes-preserve-unknown-fields: true` (fields behind Knative feature flags:
   `affinity`, pod `securityContext`, `emptyDir`, ...), unknown fields stay allowed, as in the
   apiserver.
2. `x-kubernetes-int-or-string: true` means "integer or string": where the CRD does not already
   say so with `anyOf`, we add `anyOf: [{type: integer}, {type: string}]`.
3. `x-kubernetes-embedded-resource: true` (an embedded object with its own apiVersion, kind and
   metadata): we declare those three properties and require `apiVersion` and `kind`, as the
   apiserver does. (This CRD has none; the rule is here so the transform stays right if it does.)
4. `nullable: true` adds `null` to the allowed types (none in this CRD either).
5. `x-kubernetes-list-type: set` or `map` (with `x-kubernetes-list-map-keys`): duplicates are
   rejected, as in the apiserver (e.g. two `env` entries with the same `name`). A custom
   keyword validator does it, since JSON Schema cannot say "unique by key".
6. `format: int32` / `int64` become `minimum`/`maximum` bounds.
7. The root `metadata` is `{type: object}` in every CRD: the apiserver validates ObjectMeta
   itself. We put in the ObjectMeta fields a manifest may set (name, generateName, namespace,
   labels, annotations, finalizers, ownerReferences), strings maps for labels and annotations,
   and reject anything else.

Two places are tightened beyond the CRD (the `TIGHTEN` table), because our manifests use them
and a typo there would otherwise pass: `spec.template.metadata` (the CRD preserves unknown fields
there, so `annotation:` for `annotations:` would silently lose the autoscaling settings) and
`emptyDir` (behind a feature flag, so preserved unknown; we apply Kubernetes'
EmptyDirVolumeSource: `medium`, `sizeLimit`). A test shows that the CRD alone accepts both typos.

The webhook
-----------
Knative's admission webhook (knative/serving `pkg/apis/serving/k8s_validation.go`) enforces
rules no schema carries; `knative_problems` checks the ones our manifests touch: one container
port named `http1`/`h2c`/empty and not a reserved port, probes on the serving port, the Knative
readiness-probe rule for `periodSeconds: 0`, reserved environment variables, mounts backed by
volumes and not on reserved paths, DNS-1035 names, autoscaling annotations that parse. And the
proxy's own rules: `__OW_RUNTIME_PLATFORM=knative`, `containerConcurrency` equal to
`ACTIONPROXY_MAX_CONCURRENT`, readiness on `/healthz` and liveness on `/livez`, a memory limit, the securityContext.

The Trigger
-----------
`tests/tools/schemas/knative-eventing-crd-trigger.yaml` is the Trigger CRD of knative/eventing
(SOURCES.md), made strict by the same transform. Unlike the Service CRD it does not declare
`apiVersion` and `kind` at the root, which the apiserver takes on every object: we add them as
strings. Two places are tightened (`build_trigger_validator`): `spec` itself, which the CRD
leaves open to unknown fields (for fields behind feature flags), so that `brokr:` for `broker:`
would be pruned and the Trigger would have no broker; and `spec.filter.attributes`, open in the
CRD, which becomes a map of strings ("Only string values are supported", says the CRD). A test
shows that the CRD alone accepts both. `trigger_problems` checks what Knative Eventing's webhook
adds (knative/eventing `pkg/apis/eventing/v1/trigger_validation.go`, `trigger_defaults.go`): a
broker, attribute names `[a-z][a-z0-9]*`, a subscriber ref with apiVersion, kind and name in the
Trigger's namespace, and names that fit the label values Knative copies them into; and that
the Trigger subscribes the Service written with it.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from crd_schema import (  # the generic strict CRD-schema transform, shared with test_tekton.py
    INT_OR_STRING, OBJECT_META, STRING_MAP, KubeValidator, load_crd_version, replace_at, strict,
    strict_validator, subschemas,
)

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "knative"
SCHEMAS = REPO / "tests" / "tools" / "schemas"  # vendored upstream CRDs, see SOURCES.md there
CRD_FILE = SCHEMAS / "knative-serving-crd-service.yaml"
TRIGGER_CRD_FILE = SCHEMAS / "knative-eventing-crd-trigger.yaml"

RESERVED_ENV = {"PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION"}
RESERVED_PORTS = {8012, 8013, 8022, 9090, 9091, 8008}
RESERVED_MOUNTS = {"/", "/dev", "/dev/log"}
DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")  # and at most 63 characters
ATTRIBUTE_NAME = re.compile(r"[a-z][a-z0-9]*\Z")  # validAttributeName in Knative's trigger_validation.go

TIGHTEN = {  # JSON path in the schema (through `properties`/`items`) -> what replaces its schema
    ("spec", "template", "metadata"): OBJECT_META,
    ("spec", "template", "spec", "volumes", "[]", "emptyDir"): {
        "type": "object",
        "properties": {"medium": {"type": "string"}, "sizeLimit": INT_OR_STRING},
        "additionalProperties": False,
    },
}


# ------------------------------------------------------------------------------- the schema
def load_crd_schema() -> dict:
    if not CRD_FILE.is_file():
        pytest.fail(
            f"The Knative Service CRD is missing: {CRD_FILE} not found. It is vendored in "
            f"tests/tools/schemas/ (see SOURCES.md there for where it comes from).",
            pytrace=False)
    crd = yaml.safe_load(CRD_FILE.read_text())
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == "Service"
    versions = [v for v in crd["spec"]["versions"] if v["name"] == "v1" and v.get("served")]
    assert len(versions) == 1, "the CRD should serve exactly one v1"
    return versions[0]["schema"]["openAPIV3Schema"]


def build_validator(crd_schema: dict, tighten: bool = True) -> jsonschema.protocols.Validator:
    schema = strict(copy.deepcopy(crd_schema))
    schema["properties"]["metadata"] = OBJECT_META
    if tighten:
        for path, replacement in TIGHTEN.items():
            replace_at(schema, path, strict(copy.deepcopy(replacement)))
    KubeValidator.check_schema(schema)
    return KubeValidator(schema)


@pytest.fixture(scope="session")
def crd_schema() -> dict:
    return load_crd_schema()


@pytest.fixture(scope="session")
def validator(crd_schema):
    return build_validator(crd_schema)


def build_trigger_validator(crd_schema: dict, tighten: bool = True) -> jsonschema.protocols.Validator:
    """The Trigger CRD made strict, with the root's apiVersion and kind, and tightened (module doc)."""
    schema = copy.deepcopy(crd_schema)
    schema["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, **schema["properties"]}
    if tighten:
        spec = schema["properties"]["spec"]
        del spec["x-kubernetes-preserve-unknown-fields"]
        spec["properties"]["filter"]["properties"]["attributes"] = STRING_MAP
    return strict_validator(schema)


@pytest.fixture(scope="session")
def trigger_crd_schema() -> dict:
    return load_crd_version(TRIGGER_CRD_FILE, "Trigger")


@pytest.fixture(scope="session")
def trigger_validator(trigger_crd_schema):
    return build_trigger_validator(trigger_crd_schema)


def schema_errors(validator, manifest: dict) -> list[str]:
    return [f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]


# ------------------------------------------------------------------ webhook and proxy rules
def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item.get("value") for item in container.get("env", [])}


def knative_problems(manifest: dict) -> list[str]:
    problems: list[str] = []
    if manifest.get("apiVersion") != "serving.knative.dev/v1" or manifest.get("kind") != "Service":
        problems.append("not a serving.knative.dev/v1 Service")
    name = manifest.get("metadata", {}).get("name", "")
    if not DNS1035.match(name) or len(name) > 63:
        problems.append(f"metadata.name {name!r} is not a DNS-1035 label")
    template = manifest["spec"]["template"]
    spec = template["spec"]
    containers = spec["containers"]
    if len(containers) != 1:
        return problems + [f"{len(containers)} containers: these manifests have one"]
    container = containers[0]
    ports = container.get("ports", [])
    if len(ports) != 1:
        problems.append(f"{len(ports)} container ports: Knative wants exactly one")
    port = ports[0] if ports else {}
    if port.get("name", "") not in ("http1", "h2c", ""):
        problems.append(f"port name {port.get('name')!r}: Knative allows only http1, h2c or none")
    if port.get("containerPort") in RESERVED_PORTS:
        problems.append(f"containerPort {port['containerPort']} is reserved by Knative")
    if port.get("protocol", "TCP") != "TCP":
        problems.append("the port protocol must be TCP")
    for probe_name, path in (("readinessProbe", "/healthz"), ("livenessProbe", "/livez")):
        probe = container.get(probe_name)
        if probe is None:
            problems.append(f"no {probe_name}")
            continue
        get = probe.get("httpGet", {})
        if get.get("path") != path:
            problems.append(f"{probe_name} is not httpGet {path}")
        if "port" in get and get["port"] not in (port.get("containerPort"), port.get("name")):
            problems.append(f"{probe_name} port {get['port']!r} is not the serving port")
    readiness = container.get("readinessProbe", {})
    if not readiness.get("periodSeconds") and ({"timeoutSeconds", "failureThreshold"} & readiness.keys()):
        problems.append("readinessProbe: timeoutSeconds/failureThreshold need periodSeconds (Knative)")
    env = env_of(container)
    for reserved in sorted(RESERVED_ENV & env.keys()):
        problems.append(f"env {reserved} is reserved by Knative")
    if env.get("__OW_RUNTIME_PLATFORM") != "knative":
        problems.append("__OW_RUNTIME_PLATFORM is not knative")
    concurrency = spec.get("containerConcurrency")
    if not isinstance(concurrency, int):
        problems.append("containerConcurrency is not set")
    elif concurrency > 0 and env.get("ACTIONPROXY_MAX_CONCURRENT") != str(concurrency):
        problems.append(f"containerConcurrency {concurrency} but ACTIONPROXY_MAX_CONCURRENT "
                        f"{env.get('ACTIONPROXY_MAX_CONCURRENT')!r}: they must be the same")
    elif concurrency == 0 and "ACTIONPROXY_MAX_CONCURRENT" in env:
        problems.append("containerConcurrency 0 with ACTIONPROXY_MAX_CONCURRENT set")
    if ("OW_AUTOINIT_MAIN" in env) != ("OW_AUTOINIT" in env):
        problems.append("OW_AUTOINIT and OW_AUTOINIT_MAIN go together")
    if not container.get("resources", {}).get("limits", {}).get("memory"):
        problems.append("no memory limit")
    security = container.get("securityContext", {})
    wanted = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    for key, value in wanted.items():
        if security.get(key) != value:
            problems.append(f"securityContext.{key} is {security.get(key)!r}, not {value!r}")
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    mounted = set()
    for mount in container.get("volumeMounts", []):
        mounted.add(mount["name"])
        volume = volumes.get(mount["name"])
        if volume is None:
            problems.append(f"volumeMount {mount['name']!r} has no volume")
        elif "emptyDir" not in volume and "persistentVolumeClaim" not in volume and not mount.get("readOnly"):
            problems.append(f"volumeMount {mount['name']!r} must be readOnly for this volume type")
        path = mount.get("mountPath", "")
        if not path.startswith("/") or path.rstrip("/") in RESERVED_MOUNTS or path == "/":
            problems.append(f"mountPath {path!r} is reserved or not absolute")
    for unmounted in sorted(volumes.keys() - mounted):
        problems.append(f"volume {unmounted!r} is not mounted")
    annotations = template.get("metadata", {}).get("annotations", {})
    scale = {}
    for key in ("min-scale", "max-scale", "target"):
        raw = annotations.get(f"autoscaling.knative.dev/{key}")
        if raw is None:
            problems.append(f"no autoscaling.knative.dev/{key}")
            continue
        try:
            scale[key] = float(raw)
        except ValueError:
            problems.append(f"autoscaling.knative.dev/{key} {raw!r} is not a number")
    for old_key in ("minScale", "maxScale"):  # the camelCase forms of old releases (Lithops used them)
        if f"autoscaling.knative.dev/{old_key}" in annotations:
            problems.append(f"autoscaling.knative.dev/{old_key} is the old spelling: use the kebab-case key")
    if scale.get("max-scale") and scale.get("min-scale", 0) > scale["max-scale"]:
        problems.append("min-scale is above max-scale")
    if isinstance(concurrency, int) and concurrency > 0 and scale.get("target", 0) > concurrency:
        problems.append("the autoscaling target is above containerConcurrency")
    return problems


def trigger_problems(trigger: dict, service: dict) -> list[str]:
    """Knative Eventing's webhook rules for a Trigger, and that it delivers to `service`."""
    problems: list[str] = []
    if trigger.get("apiVersion") != "eventing.knative.dev/v1" or trigger.get("kind") != "Trigger":
        problems.append("not an eventing.knative.dev/v1 Trigger")
    metadata, spec = trigger.get("metadata", {}), trigger.get("spec", {})
    names = [("metadata.name", metadata.get("name", ""))]
    if spec.get("broker"):
        names.append(("spec.broker", spec["broker"]))
    else:
        problems.append("spec.broker is missing")
    # object names are DNS-1123 subdomains; Knative labels the Trigger (and its Subscription) with
    # eventing.knative.dev/broker and eventing.knative.dev/trigger, so both must be label values too
    for where, name in names:
        if not (DNS1123_SUBDOMAIN.match(name) and LABEL_VALUE.match(name) and len(name) <= 63):
            problems.append(f"{where} {name!r} is not a DNS-1123 subdomain of at most 63 characters")
    for key, value in spec.get("filter", {}).get("attributes", {}).items():
        if not ATTRIBUTE_NAME.match(key):
            problems.append(f"filter attribute {key!r}: Knative refuses it (not [a-z][a-z0-9]*)")
        if value == "":
            problems.append(f"filter attribute {key!r} is empty: Knative matches any value")
    ref = spec.get("subscriber", {}).get("ref")
    if ref is None:
        return problems + ["spec.subscriber.ref is missing"]
    problems += [f"spec.subscriber.ref.{field} is missing" for field in ("apiVersion", "kind", "name")
                 if not ref.get(field)]
    if ref.get("namespace", metadata.get("namespace")) != metadata.get("namespace"):
        problems.append("spec.subscriber.ref.namespace is not the Trigger's: mismatched namespaces")
    wanted = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": service["metadata"]["name"]}
    if {field: ref.get(field) for field in wanted} != wanted:
        problems.append(f"spec.subscriber.ref does not point at the Service {wanted['name']}")
    if metadata.get("namespace") != service["metadata"].get("namespace"):
        problems.append("the Trigger is not in the Service's namespace")
    return problems


# --------------------------------------------------------------------------------- helpers
def ksvc(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real CLI, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "actionproxy", "ksvc", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd or REPO)


def generated(*args: str) -> tuple[dict, str]:
    done = ksvc(*args)
    assert done.returncode == 0, done.stderr
    documents = list(yaml.safe_load_all(done.stdout))
    assert len(documents) == 1, "one manifest per run"
    return documents[0], done.stderr


def generated_documents(*args: str) -> tuple[list[dict], str]:
    """What `ksvc` writes with a Trigger: the YAML documents, and stderr."""
    done = ksvc(*args)
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout)), done.stderr


def hand_written() -> list[Path]:
    files = sorted(DEPLOY.glob("*.yaml")) + sorted(DEPLOY.glob("*.yml"))
    assert len(files) >= 3, f"expected the dedicated, stem-cell and trigger manifests in {DEPLOY}"
    return files


def by_kind(path: Path) -> dict[str, dict]:
    """The documents of a file in deploy/knative/ by kind: a Service, and maybe a Trigger."""
    documents = list(yaml.safe_load_all(path.read_text()))
    kinds = {document["kind"]: document for document in documents}
    assert len(kinds) == len(documents) and "Service" in kinds and kinds.keys() <= {"Service", "Trigger"}, path
    return kinds


def same_as_command(path: Path) -> list[str]:
    """The `actionproxy ksvc ...` arguments in a manifest's `# Same as:` comment."""
    lines = path.read_text().splitlines()
    start = lines.index("# Same as:")
    command = []
    for line in lines[start + 1:]:
        text = line.lstrip("#").strip()
        command.append(text.rstrip("\\").strip())
        if not text.endswith("\\"):
            break
    argv = shlex.split(" ".join(command))
    assert argv[:2] == ["actionproxy", "ksvc"], argv
    return argv[2:]


GENERATED = {
    "dedicated-defaults": ["--image", "registry.example.com/fn/hello:1", "--name", "hello",
                           "--autoinit", "/action/hello.py"],
    "dedicated-everything": ["--image", "registry.example.com/fn/wc@sha256:" + "ab" * 32, "--name", "word-count",
                             "--namespace", "functions", "--autoinit", "/action/wc.zip", "--main", "count",
                             "--concurrency", "500", "--target", "300", "--timeout", "900",
                             "--memory", "1Gi", "--tmp-size", "2Gi", "--min-scale", "1", "--max-scale", "0",
                             "--visibility", "cluster-local", "--env", "LOG_LEVEL=debug", "GREETING=hello world",
                             "--env", "ACTIONPROXY_PARAM_limit=10"],
    "stem-cell-nodejs": ["--image", "registry.example.com/actionproxy/nodejs:0.1.0", "--name", "node-stem"],
    "stem-cell-public-no-tmp": ["--image", "actionproxy/blackbox", "--name", "bb", "--visibility", "public",
                                "--tmp-size", "0", "--concurrency", "1", "--memory", "128Mi"],
    "unlimited-concurrency": ["--image", "actionproxy/python", "--name", "py", "--concurrency", "0"],
}


# ------------------------------------------------------------------------------- the tests
def open_objects(schema: dict) -> list[str]:
    """The paths of the objects with properties that take unknown fields without the CRD saying so."""
    found = []

    def walk(node: dict, path: str) -> None:
        if "properties" in node and node.get("additionalProperties") is not False \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            found.append(path)
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        for child in subschemas({k: v for k, v in node.items() if k != "properties"}):
            walk(child, f"{path}[]")

    walk(schema, "")
    return found


def test_transform_closes_every_declared_object(crd_schema):
    """Self-check of step 1: no object with properties is left open unless the CRD says so."""
    schema = build_validator(crd_schema).schema
    assert open_objects(schema) == []
    containers = schema["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"]["containers"]
    assert containers["items"]["additionalProperties"] is False


@pytest.mark.parametrize("path", hand_written(), ids=lambda p: p.name)
def test_hand_written_manifest_is_valid(path, validator, trigger_validator):
    documents = by_kind(path)
    assert schema_errors(validator, documents["Service"]) == []
    assert knative_problems(documents["Service"]) == []
    if "Trigger" in documents:
        assert schema_errors(trigger_validator, documents["Trigger"]) == []
        assert trigger_problems(documents["Trigger"], documents["Service"]) == []


@pytest.mark.parametrize("path", hand_written(), ids=lambda p: p.name)
def test_hand_written_manifest_is_what_ksvc_writes(path):
    """The comment `# Same as: actionproxy ksvc ...` in each file is true, every document of it."""
    documents, _ = generated_documents(*same_as_command(path))
    assert documents == list(yaml.safe_load_all(path.read_text()))


def test_the_two_kinds_are_there():
    kinds = {}
    for path in hand_written():
        manifest = by_kind(path)["Service"]
        env = env_of(manifest["spec"]["template"]["spec"]["containers"][0])
        kinds["dedicated" if "OW_AUTOINIT" in env else "stem-cell"] = manifest
    assert kinds.keys() == {"dedicated", "stem-cell"}
    assert kinds["stem-cell"]["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert "control plane" in (DEPLOY / "service-stem-cell.yaml").read_text()


@pytest.mark.parametrize("case", GENERATED)
def test_generated_manifest_is_valid(case, validator):
    manifest, _ = generated(*GENERATED[case])
    assert schema_errors(validator, manifest) == []
    assert knative_problems(manifest) == []


def test_generated_manifest_says_what_it_is():
    dedicated = ksvc(*GENERATED["dedicated-defaults"])
    header = [line for line in dedicated.stdout.splitlines() if line.startswith("#")]
    assert any("Dedicated function image" in line for line in header)
    assert any("containerConcurrency = ACTIONPROXY_MAX_CONCURRENT = 100" in line for line in header)
    stem = ksvc(*GENERATED["stem-cell-nodejs"]).stdout
    assert "external control plane" in stem
    manifest = yaml.safe_load(stem)
    assert manifest["metadata"]["labels"] == {"networking.knative.dev/visibility": "cluster-local"}
    assert "OW_AUTOINIT" not in env_of(manifest["spec"]["template"]["spec"]["containers"][0])


def test_generated_options_land_where_they_should():
    manifest, warnings = generated(*GENERATED["dedicated-everything"])
    assert warnings.count("warning") == 1 and "max-revision-timeout-seconds" in warnings  # --timeout 900
    assert manifest["metadata"] == {"name": "word-count", "namespace": "functions",
                                    "labels": {"networking.knative.dev/visibility": "cluster-local"}}
    template = manifest["spec"]["template"]
    assert template["metadata"]["annotations"] == {"autoscaling.knative.dev/min-scale": "1",
                                                   "autoscaling.knative.dev/max-scale": "0",
                                                   "autoscaling.knative.dev/target": "300"}
    spec = template["spec"]
    assert (spec["containerConcurrency"], spec["timeoutSeconds"]) == (500, 900)
    container = spec["containers"][0]
    assert container["image"] == "registry.example.com/fn/wc@sha256:" + "ab" * 32
    assert env_of(container) == {"__OW_RUNTIME_PLATFORM": "knative", "ACTIONPROXY_MAX_CONCURRENT": "500",
                                 "OW_AUTOINIT": "/action/wc.zip", "OW_AUTOINIT_MAIN": "count",
                                 "LOG_LEVEL": "debug", "GREETING": "hello world", "ACTIONPROXY_PARAM_limit": "10"}
    assert container["resources"] == {"requests": {"memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    assert spec["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": "2Gi"}}]
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


def test_no_tmp_volume_and_public_stem_cell():
    manifest, _ = generated(*GENERATED["stem-cell-public-no-tmp"])
    spec = manifest["spec"]["template"]["spec"]
    assert "volumes" not in spec and "volumeMounts" not in spec["containers"][0]
    assert "labels" not in manifest["metadata"]
    assert spec["containerConcurrency"] == 1


def test_concurrency_zero_warns_and_leaves_the_proxy_cap_alone():
    manifest, warnings = generated(*GENERATED["unlimited-concurrency"])
    spec = manifest["spec"]["template"]["spec"]
    assert spec["containerConcurrency"] == 0
    assert "ACTIONPROXY_MAX_CONCURRENT" not in env_of(spec["containers"][0])
    assert manifest["spec"]["template"]["metadata"]["annotations"]["autoscaling.knative.dev/target"] == "100"
    assert "warning" in warnings and "503" in warnings


def test_output_file(tmp_path):
    out = tmp_path / "hello.yaml"
    done = ksvc(*GENERATED["dedicated-defaults"], "-o", str(out))
    assert done.returncode == 0 and done.stdout == ""
    assert yaml.safe_load(out.read_text()) == generated(*GENERATED["dedicated-defaults"])[0]


@pytest.mark.parametrize("args, message", [
    (["--name", "Hello"], "DNS-1035"),
    (["--name", "1hello"], "DNS-1035"),
    (["--name", "hello-"], "DNS-1035"),
    (["--name", "a" * 64], "DNS-1035"),
    (["--name", "ok", "--concurrency", "-1"], "--concurrency must be 0"),
    (["--name", "ok", "--concurrency", "10", "--target", "11"], "cannot exceed --concurrency"),
    (["--name", "ok", "--timeout", "0"], "--timeout must be at least 1"),
    (["--name", "ok", "--memory", "lots"], "Kubernetes quantity"),
    (["--name", "ok", "--memory", "32Mi"], "at least 64Mi"),
    (["--name", "ok", "--tmp-size", "-1"], "Kubernetes quantity"),
    (["--name", "ok", "--min-scale", "3", "--max-scale", "2"], "cannot exceed --max-scale"),
    (["--name", "ok", "--min-scale", "-1"], "--min-scale must be 0"),
    (["--name", "ok", "--main", "handler"], "give --autoinit too"),
    (["--name", "ok", "--autoinit", "action/hello.py"], "must be absolute"),
    (["--name", "ok", "--env", "PORT=9000"], "Knative reserves PORT"),
    (["--name", "ok", "--env", "K_SERVICE=x"], "Knative reserves K_SERVICE"),
    (["--name", "ok", "--env", "ACTIONPROXY_MAX_CONCURRENT=5"], "use --concurrency"),
    (["--name", "ok", "--env", "OW_AUTOINIT=/x"], "use --autoinit"),
    (["--name", "ok", "--env", "A=1", "A=2"], "given twice"),
    (["--name", "ok", "--env", "NOVALUE"], "NAME=VALUE"),
    (["--name", "ok", "--env", "1X=y"], "variable name"),
])
def test_bad_arguments_are_refused_clearly(args, message):
    done = ksvc("--image", "actionproxy/python", *args)
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""
    assert message in done.stderr and "actionproxy ksvc: error:" in done.stderr


def test_all_problems_are_reported_at_once():
    done = ksvc("--image", "actionproxy/python", "--name", "Bad", "--concurrency", "-2", "--env", "PORT=1")
    assert done.returncode == 2
    assert done.stderr.count("actionproxy ksvc: error:") == 3


def test_serving_does_not_import_yaml():
    """PyYAML is imported by `ksvc` only: building the CLI (what `serve` does first) does not."""
    code = ("import sys; from actionproxy import cli; cli.parser().parse_args(['serve', '--runtime', 'python']); "
            "assert 'yaml' not in sys.modules, 'yaml imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# ------------------------------------------------------------ the validator can fail
@pytest.fixture
def good() -> dict:
    return yaml.safe_load((DEPLOY / "service-dedicated.yaml").read_text())


def container_of(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def test_rejects_an_unknown_container_field(good, validator, crd_schema):
    container_of(good)["portz"] = [{"containerPort": 8080}]
    errors = schema_errors(validator, good)
    assert len(errors) == 1
    assert errors[0].startswith("spec.template.spec.containers.0:") and "'portz'" in errors[0]
    # without the transform, the CRD schema alone lets it through (the apiserver would prune it)
    assert schema_errors(KubeValidator(crd_schema), good) == []


@pytest.mark.parametrize("where, typo", [
    (lambda m: m["spec"], "templat"),
    (lambda m: m["spec"]["template"]["spec"], "containerconcurrency"),
    (lambda m: container_of(m)["readinessProbe"]["httpGet"], "paht"),
    (lambda m: container_of(m)["securityContext"], "readOnlyRootFileSystem"),
    (lambda m: container_of(m)["resources"], "limit"),
    (lambda m: m["metadata"], "label"),
])
def test_rejects_unknown_fields_anywhere(good, validator, where, typo):
    where(good)[typo] = "x"
    errors = schema_errors(validator, good)
    assert len(errors) == 1 and f"'{typo}'" in errors[0], errors


@pytest.mark.parametrize("change, expected", [
    (lambda m: m["spec"]["template"]["spec"].__setitem__("containerConcurrency", "32"), "is not of type 'integer'"),
    (lambda m: container_of(m)["env"][1].__setitem__("value", 32), "is not of type 'string'"),
    (lambda m: container_of(m).__setitem__("ports", {"name": "http1", "containerPort": 8080}), "is not of type 'array'"),
    (lambda m: container_of(m)["securityContext"].__setitem__("runAsNonRoot", "true"), "is not of type 'boolean'"),
    (lambda m: m["spec"]["template"]["metadata"]["annotations"].__setitem__("autoscaling.knative.dev/min-scale", 0),
     "is not of type 'string'"),
    (lambda m: container_of(m)["resources"]["limits"].__setitem__("memory", "256 MB"), "does not match"),
    (lambda m: container_of(m)["ports"][0].__setitem__("containerPort", 2**31), "is greater than the maximum"),
])
def test_rejects_wrong_types(good, validator, change, expected):
    change(good)
    errors = schema_errors(validator, good)
    assert len(errors) == 1 and expected in errors[0], errors


def test_rejects_a_missing_required_field(good, validator):
    del good["spec"]["template"]["spec"]["containers"]
    assert schema_errors(validator, good) == ["spec.template.spec: 'containers' is a required property"]


def test_rejects_duplicates_in_map_lists(good, validator):
    container_of(good)["env"].append({"name": "OW_AUTOINIT", "value": "/elsewhere"})
    errors = schema_errors(validator, good)
    assert len(errors) == 1 and "duplicate entries" in errors[0] and "OW_AUTOINIT" in errors[0]


def test_tightened_places_catch_typos_the_crd_lets_through(good, validator, crd_schema):
    good["spec"]["template"]["metadata"]["annotation"] = {"autoscaling.knative.dev/max-scale": "3"}
    good["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizelimit"] = "1Gi"
    errors = schema_errors(validator, good)
    assert len(errors) == 2 and "'annotation'" in errors[0] and "'sizelimit'" in errors[1], errors
    assert schema_errors(build_validator(crd_schema, tighten=False), good) == []


@pytest.mark.parametrize("change, expected", [
    (lambda m: container_of(m)["ports"][0].__setitem__("name", "http"), "port name 'http'"),
    (lambda m: container_of(m)["ports"].append({"containerPort": 9000}), "2 container ports"),
    (lambda m: container_of(m)["ports"][0].__setitem__("containerPort", 8012), "reserved by Knative"),
    (lambda m: container_of(m)["livenessProbe"]["httpGet"].__setitem__("port", 9000), "not the serving port"),
    (lambda m: container_of(m)["readinessProbe"].__setitem__("failureThreshold", 3), "need periodSeconds"),
    (lambda m: container_of(m)["env"].append({"name": "PORT", "value": "9"}), "PORT is reserved"),
    (lambda m: m["spec"]["template"]["spec"].__setitem__("containerConcurrency", 64), "must be the same"),
    (lambda m: container_of(m)["env"].pop(0), "__OW_RUNTIME_PLATFORM is not knative"),
    (lambda m: container_of(m)["securityContext"].__setitem__("readOnlyRootFilesystem", False),
     "readOnlyRootFilesystem"),
    (lambda m: container_of(m)["volumeMounts"][0].__setitem__("mountPath", "/dev"), "reserved or not absolute"),
    (lambda m: m["spec"]["template"]["spec"]["volumes"][0].__setitem__("name", "scratch"), "has no volume"),
    (lambda m: m["metadata"].__setitem__("name", "Hello"), "DNS-1035"),
    (lambda m: m["spec"]["template"]["metadata"]["annotations"].__setitem__("autoscaling.knative.dev/target", "64"),
     "target is above containerConcurrency"),
    (lambda m: m["spec"]["template"]["metadata"]["annotations"].__setitem__("autoscaling.knative.dev/minScale", "1"),
     "old spelling"),
])
def test_webhook_rules_can_fail(good, validator, change, expected):
    change(good)
    problems = knative_problems(good)
    assert any(expected in problem for problem in problems), problems


# ------------------------------------------------- what the CRD says that one might not expect
@pytest.mark.parametrize("change, accepted", [
    # Quantities are integer-or-string: a YAML float is neither (write "500m" or "0.5")
    (lambda m: container_of(m)["resources"]["requests"].__setitem__("cpu", 0.5), False),
    (lambda m: container_of(m)["resources"]["requests"].__setitem__("cpu", "500m"), True),
    # Knative leaves out of its PodSpec what it manages itself: draining and the grace period
    # (from timeoutSeconds), so shutdown work goes in the SIGTERM handler, not a preStop hook
    (lambda m: container_of(m).__setitem__("lifecycle", {"preStop": {"exec": {"command": ["sleep", "5"]}}}), False),
    (lambda m: m["spec"]["template"]["spec"].__setitem__("terminationGracePeriodSeconds", 30), False),
    # container securityContext: only Knative's allowed subset
    (lambda m: container_of(m)["securityContext"].__setitem__("appArmorProfile", {"type": "RuntimeDefault"}), False),
    (lambda m: container_of(m)["securityContext"].__setitem__("seLinuxOptions", {"type": "spc_t"}), False),
    # behind feature flags: the CRD keeps anything, the webhook decides
    (lambda m: m["spec"]["template"]["spec"].__setitem__("securityContext", {"fsGroup": 10001}), True),
    (lambda m: m["spec"]["template"]["spec"].__setitem__("runtimeClassName", "gvisor"), True),
    # a port needs no number (Knative defaults to 8080)
    (lambda m: container_of(m).__setitem__("ports", [{"name": "http1"}]), True),
])
def test_crd_quirks(good, validator, change, accepted):
    change(good)
    assert (schema_errors(validator, good) == []) == accepted


# -------------------------------------------------------------------------------- the Trigger
ORDERS = ["--image", "registry.example.com/fn/orders:1", "--name", "orders", "--autoinit", "/action/orders.py"]
TRIGGERS = {
    "filters-in-a-namespace": [*ORDERS, "--namespace", "shop", "--trigger-broker", "default",
                               "--trigger-filter", "type=com.example.order.created",
                               "--trigger-filter", "source=https://shop.example.com/orders",
                               "--trigger-filter", "priority=1"],  # looks like a number to YAML
    "named-dotted-broker": [*ORDERS, "--trigger-broker", "events.shop", "--trigger-name", "orders.created",
                            "--trigger-filter", "type=true"],
    "stem-cell-every-event": ["--image", "actionproxy/python", "--name", "py", "--trigger-broker", "default"],
}


@pytest.fixture
def good_trigger() -> dict:
    return by_kind(DEPLOY / "trigger.yaml")["Trigger"]


def test_trigger_transform_closes_every_declared_object(trigger_validator):
    schema = trigger_validator.schema
    assert open_objects(schema) == []
    assert schema["properties"]["spec"]["additionalProperties"] is False
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize("case", TRIGGERS)
def test_generated_trigger_is_valid(case, validator, trigger_validator):
    (service, trigger), _ = generated_documents(*TRIGGERS[case])
    assert (service["kind"], trigger["kind"]) == ("Service", "Trigger")
    assert schema_errors(validator, service) == [] and knative_problems(service) == []
    assert schema_errors(trigger_validator, trigger) == []
    assert trigger_problems(trigger, service) == []


def test_trigger_output_is_two_yaml_documents(tmp_path):
    done = ksvc(*TRIGGERS["filters-in-a-namespace"])
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.count("\n---\n") == 1
    service_text, trigger_text = done.stdout.split("\n---\n")
    assert yaml.safe_load(service_text)["kind"] == "Service"
    assert yaml.safe_load(trigger_text)["kind"] == "Trigger"
    assert trigger_text.startswith("# Knative Eventing Trigger: the broker `default` sends the Service `orders`")
    out = tmp_path / "orders.yaml"
    assert ksvc(*TRIGGERS["filters-in-a-namespace"], "-o", str(out)).stdout == ""
    assert out.read_text() == done.stdout


def test_trigger_options_land_where_they_should():
    (service, trigger), _ = generated_documents(*TRIGGERS["filters-in-a-namespace"])
    assert trigger == {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "orders-trigger", "namespace": "shop"},
        "spec": {
            "broker": "default",
            "filter": {"attributes": {"type": "com.example.order.created",
                                      "source": "https://shop.example.com/orders", "priority": "1"}},
            "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                   "name": "orders", "namespace": "shop"}},
        },
    }
    assert service == generated(*ORDERS, "--namespace", "shop")[0], "the Service is the one without a Trigger"
    (_, named), _ = generated_documents(*TRIGGERS["named-dotted-broker"])
    assert named["metadata"] == {"name": "orders.created"}
    assert named["spec"]["filter"]["attributes"] == {"type": "true"}
    assert named["spec"]["subscriber"]["ref"] == {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                                  "name": "orders"}


def test_a_trigger_without_filters_takes_every_event_and_warns():
    (_, trigger), warnings = generated_documents(*TRIGGERS["stem-cell-every-event"])
    assert trigger["metadata"] == {"name": "py-trigger"} and "filter" not in trigger["spec"]
    assert warnings.count("actionproxy ksvc: warning:") == 2
    assert "stem cell" in warnings and "dev.actionproxy.response" in warnings and "loop" in warnings


@pytest.mark.parametrize("extra, loops", [
    (["--trigger-filter", "type=com.example.order.created"], False),
    (["--trigger-filter", "source=/shop"], True),
    (["--trigger-filter", "type=dev.actionproxy.response"], True),
    (["--env", "ACTIONPROXY_CE_TYPE=com.example.order.done", "--trigger-filter", "type=com.example.order.done"], True),
    (["--env", "ACTIONPROXY_CE_TYPE=com.example.order.done", "--trigger-filter", "type=dev.actionproxy.response"],
     False),
])
def test_a_trigger_that_takes_the_functions_replies_warns(extra, loops):
    _, warnings = generated_documents(*ORDERS, "--trigger-broker", "default", *extra)
    assert ("loop" in warnings) == loops, warnings


@pytest.mark.parametrize("args, message", [
    (["--trigger-filter", "type=com.example.x"], "--trigger-filter needs --trigger-broker"),
    (["--trigger-name", "orders-trigger"], "--trigger-name needs --trigger-broker"),
    (["--trigger-broker", "Default"], "--trigger-broker must be a broker name"),
    (["--trigger-broker", "default-"], "--trigger-broker must be a broker name"),
    (["--trigger-broker", "my_broker"], "--trigger-broker must be a broker name"),
    (["--trigger-broker", "b" * 64], "--trigger-broker must be a broker name"),
    (["--trigger-broker", "default", "--trigger-name", "Orders"], "--trigger-name must be"),
    (["--trigger-broker", "default", "--trigger-name", ".orders"], "--trigger-name must be"),
    (["--trigger-broker", "default", "--trigger-name", "t" * 64], "--trigger-name must be"),
    (["--name", "o" * 60, "--trigger-broker", "default"], "give a shorter --trigger-name"),
    (["--trigger-broker", "default", "--trigger-filter", "Type=x"], "CloudEvents attribute name"),
    (["--trigger-broker", "default", "--trigger-filter", "ce-type=x"], "CloudEvents attribute name"),
    (["--trigger-broker", "default", "--trigger-filter", "1type=x"], "a letter first"),
    (["--trigger-broker", "default", "--trigger-filter", "a" * 21 + "=x"], "1 to 20"),
    (["--trigger-broker", "default", "--trigger-filter", "type=a", "--trigger-filter", "type=b"], "given twice"),
    (["--trigger-broker", "default", "--trigger-filter", "type="], "empty value"),
    (["--trigger-broker", "default", "--trigger-filter", "type"], "--trigger-filter takes KEY=VALUE"),
    (["--trigger-broker", "default", "--trigger-filter", "=x"], "--trigger-filter takes KEY=VALUE"),
])
def test_bad_trigger_arguments_are_refused_clearly(args, message):
    done = ksvc(*ORDERS, *args)  # a later --name replaces ORDERS' one
    assert done.returncode == 2, done.stdout
    assert done.stdout == ""
    assert message in done.stderr and "actionproxy ksvc: error:" in done.stderr


def test_all_trigger_problems_are_reported_at_once():
    done = ksvc(*ORDERS, "--concurrency", "-1", "--trigger-broker", "Bad", "--trigger-filter", "Type=x",
                "--trigger-filter", "source=")
    assert done.returncode == 2
    assert done.stderr.count("actionproxy ksvc: error:") == 4, done.stderr


def test_the_trigger_example_delivers_events_to_its_service():
    documents = by_kind(DEPLOY / "trigger.yaml")
    assert list(documents) == ["Service", "Trigger"]
    trigger = documents["Trigger"]
    assert trigger["spec"]["filter"]["attributes"]["type"]
    assert trigger["spec"]["subscriber"]["ref"]["name"] == documents["Service"]["metadata"]["name"]


@pytest.mark.parametrize("where, typo", [
    (lambda t: t, "spc"),
    (lambda t: t["metadata"], "label"),
    (lambda t: t["spec"], "brokr"),
    (lambda t: t["spec"]["filter"], "attribute"),
    (lambda t: t["spec"]["subscriber"], "reff"),
    (lambda t: t["spec"]["subscriber"]["ref"], "namespce"),
])
def test_trigger_rejects_unknown_fields_anywhere(good_trigger, trigger_validator, where, typo):
    where(good_trigger)[typo] = "x"
    errors = schema_errors(trigger_validator, good_trigger)
    assert len(errors) == 1 and f"'{typo}'" in errors[0], errors


def test_trigger_rejects_an_unknown_field_the_crd_alone_would_prune(good_trigger, trigger_validator,
                                                                    trigger_crd_schema):
    good_trigger["spec"]["subscriber"]["ref"]["nmae"] = "orders"
    errors = schema_errors(trigger_validator, good_trigger)
    assert len(errors) == 1 and errors[0].startswith("spec.subscriber.ref:") and "'nmae'" in errors[0]
    assert schema_errors(KubeValidator(trigger_crd_schema), good_trigger) == []


def test_trigger_tightened_places_catch_what_the_crd_lets_through(good_trigger, trigger_validator,
                                                                  trigger_crd_schema):
    good_trigger["spec"]["brokr"] = good_trigger["spec"].pop("broker")
    good_trigger["spec"]["filter"]["attributes"]["priority"] = 1
    errors = schema_errors(trigger_validator, good_trigger)
    assert len(errors) == 2, errors
    assert "'brokr'" in errors[0] and "1 is not of type 'string'" in errors[1], errors
    assert schema_errors(build_trigger_validator(trigger_crd_schema, tighten=False), good_trigger) == []


@pytest.mark.parametrize("change, expected", [
    (lambda t: t["spec"].__setitem__("broker", 1), "is not of type 'string'"),
    (lambda t: t["spec"]["subscriber"].__setitem__("ref", ["orders"]), "is not of type 'object'"),
    (lambda t: t["spec"]["filter"].__setitem__("attributes", ["type"]), "is not of type 'object'"),
    (lambda t: t.__setitem__("kind", ["Trigger"]), "is not of type 'string'"),
    (lambda t: t["metadata"].__setitem__("labels", {"team": 7}), "is not of type 'string'"),
])
def test_trigger_rejects_wrong_types(good_trigger, trigger_validator, change, expected):
    change(good_trigger)
    errors = schema_errors(trigger_validator, good_trigger)
    assert len(errors) == 1 and expected in errors[0], errors


@pytest.mark.parametrize("change, expected", [
    (lambda t: t.__setitem__("apiVersion", "eventing.knative.dev/v1beta1"), "not an eventing.knative.dev/v1 Trigger"),
    (lambda t: t["spec"].pop("broker"), "spec.broker is missing"),
    (lambda t: t["spec"].__setitem__("broker", "Default"), "spec.broker 'Default'"),
    (lambda t: t["metadata"].__setitem__("name", "t" * 64), "metadata.name"),
    (lambda t: t["spec"]["filter"]["attributes"].__setitem__("ce-type", "x"), "Knative refuses it"),
    (lambda t: t["spec"]["filter"]["attributes"].__setitem__("2nd", "x"), "Knative refuses it"),
    (lambda t: t["spec"]["filter"]["attributes"].__setitem__("type", ""), "matches any value"),
    (lambda t: t["spec"].pop("subscriber"), "spec.subscriber.ref is missing"),
    (lambda t: t["spec"]["subscriber"]["ref"].pop("kind"), "spec.subscriber.ref.kind is missing"),
    (lambda t: t["spec"]["subscriber"]["ref"].__setitem__("namespace", "elsewhere"), "mismatched namespaces"),
    (lambda t: t["spec"]["subscriber"]["ref"].__setitem__("name", "other"), "does not point at the Service"),
    (lambda t: t["metadata"].__setitem__("namespace", "elsewhere"), "not in the Service's namespace"),
])
def test_trigger_webhook_rules_can_fail(good_trigger, change, expected):
    change(good_trigger)
    service = by_kind(DEPLOY / "trigger.yaml")["Service"]
    problems = trigger_problems(good_trigger, service)
    assert any(expected in problem for problem in problems), problems
