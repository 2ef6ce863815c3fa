"""Strict offline validation of Kubernetes manifests against a CRD's `openAPIV3Schema`.

Shared by tests/test_knative_manifests.py (Knative Service) and tests/test_tekton.py (Tekton
Task, Pipeline, PipelineRun). The transform (`strict`) is described in the docstring of
tests/test_knative_manifests.py: unknown fields rejected (`additionalProperties: false` wherever
`properties` exist without `x-kubernetes-preserve-unknown-fields`), int-or-string, embedded
resources, nullable, int32/int64 bounds, and `x-kubernetes-list-type` set/map uniqueness; the
root `metadata` becomes a closed ObjectMeta.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import yaml

INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECT_META = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "generateName": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": STRING_MAP,
        "annotations": STRING_MAP,
        "finalizers": {"type": "array", "items": {"type": "string"}},
        "ownerReferences": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": False,
}
INT_OR_STRING = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}


def load_crd_version(crd_file: Path, kind: str, version: str = "v1") -> dict:
    """`spec.versions[name=version, served].schema.openAPIV3Schema` of the CRD for `kind`."""
    crd = yaml.safe_load(Path(crd_file).read_text())
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind, crd_file
    versions = [v for v in crd["spec"]["versions"] if v["name"] == version and v.get("served")]
    assert len(versions) == 1, f"the CRD {crd_file} should serve exactly one {version}"
    return versions[0]["schema"]["openAPIV3Schema"]


def subschemas(node: dict):
    """The schemas directly inside one schema node."""
    for child in node.get("properties", {}).values():
        yield child
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            yield node[key]
    for key in ("anyOf", "allOf", "oneOf"):
        yield from node.get(key, [])


def strict(node: dict) -> dict:
    """The strict transform, on a copy, everywhere in the tree."""
    node = dict(node)
    for key in ("properties",):
        if key in node:
            node[key] = {name: strict(child) for name, child in node[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = strict(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            node[key] = [strict(child) for child in node[key]]
    if node.get("x-kubernetes-int-or-string") and not ({"anyOf", "oneOf", "type"} & node.keys()):
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("x-kubernetes-embedded-resource"):
        node["properties"] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                              "metadata": {"type": "object"}, **node.get("properties", {})}
        node["required"] = sorted({"apiVersion", "kind", *node.get("required", [])})
    if node.get("nullable") and "type" in node:
        node["type"] = [node["type"], "null"]
    if node.get("format") in INT_BOUNDS and node.get("type") == "integer":
        node.setdefault("minimum", INT_BOUNDS[node["format"]][0])
        node.setdefault("maximum", INT_BOUNDS[node["format"]][1])
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node


def replace_at(schema: dict, path: tuple[str, ...], replacement: dict) -> None:
    """Replace the schema at `path` (property names, `[]` for array items)."""
    node = schema
    for step in path[:-1]:
        node = node["items"] if step == "[]" else node["properties"][step]
    last = path[-1]
    if last == "[]":
        node["items"] = replacement
    else:
        assert last in node["properties"], f"no {'.'.join(path)} in the CRD"
        node["properties"][last] = replacement


def list_type(validator, kind, instance, schema):
    """x-kubernetes-list-type: `set` items are unique; `map` items are unique by their keys."""
    if not validator.is_type(instance, "array") or kind not in ("set", "map"):
        return
    seen: dict[str, int] = {}
    keys = schema.get("x-kubernetes-list-map-keys", [])
    for index, item in enumerate(instance):
        if kind == "map" and isinstance(item, dict):
            identity = json.dumps({key: item.get(key) for key in keys}, sort_keys=True)
        else:
            identity = json.dumps(item, sort_keys=True)
        if identity in seen:
            yield jsonschema.ValidationError(
                f"duplicate entries {seen[identity]} and {index} ({kind} keyed by {keys or 'value'}: {identity})")
        seen[identity] = index


KubeValidator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"x-kubernetes-list-type": list_type})


def strict_validator(crd_schema: dict, tighten: dict | None = None) -> jsonschema.protocols.Validator:
    """A validator for whole manifests: strict transform, closed root metadata, then `tighten`
    (path -> replacement schema, itself made strict)."""
    schema = strict(copy.deepcopy(crd_schema))
    schema["properties"]["metadata"] = OBJECT_META
    for path, replacement in (tighten or {}).items():
        replace_at(schema, path, strict(copy.deepcopy(replacement)))
    KubeValidator.check_schema(schema)
    return KubeValidator(schema)


def schema_errors(validator: jsonschema.protocols.Validator, document) -> list[str]:
    """Every schema error as `path: message`, sorted."""
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                  for e in validator.iter_errors(document))
