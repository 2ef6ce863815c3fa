"""The PipelineRun manifest for `actionproxy build` (same shape as tekton/examples/pipelinerun-function.yaml)."""

from __future__ import annotations

PIPELINE = "actionproxy-function"


def pipelinerun(*, runtime: str, target: str, source_url: str, runtime_image: str, image: str,
                source_revision: str = "", source_subdir: str = ".", main: str = "main",
                deploy: bool = False, service_name: str = "", workspace_claim: str | None = None,
                workspace_size: str = "1Gi", docker_config_secret: str | None = None,
                service_account: str | None = None, timeout: str | None = None,
                pipeline: str = PIPELINE) -> dict:
    params = {
        "source-url": source_url,
        "source-revision": source_revision,
        "source-subdir": source_subdir,
        "runtime": runtime,
        "target": target,
        "main": main,
        "runtime-image": runtime_image,
        "image": image,
        "deploy": "true" if deploy else "false",
        "service-name": service_name or "",
    }
    if workspace_claim:
        source = {"name": "source", "persistentVolumeClaim": {"claimName": workspace_claim}}
    else:
        source = {"name": "source", "volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": workspace_size}}}}}
    workspaces = [source]
    if docker_config_secret:
        workspaces.append({"name": "dockerconfig", "secret": {"secretName": docker_config_secret}})
    spec: dict = {
        "pipelineRef": {"name": pipeline},
        "params": [{"name": k, "value": v} for k, v in params.items()],
        "workspaces": workspaces,
    }
    if service_account:
        spec["taskRunTemplate"] = {"serviceAccountName": service_account}
    if timeout:
        spec["timeouts"] = {"pipeline": timeout}
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"generateName": f"{pipeline}-",
                     "labels": {"app.kubernetes.io/part-of": "actionproxy"}},
        "spec": spec,
    }
