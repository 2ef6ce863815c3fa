"""`actionproxy build` without --local: the PipelineRun on a cluster (see tekton/README.md)."""

from __future__ import annotations

import argparse
import signal
import sys

from actionproxy.config import RUNTIMES
from actionproxy.tools.bake import TARGETS

EXTRA = "install the tools extra: pip install 'actionproxy[tools]'"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="actionproxy build", allow_abbrev=False,
        description="build (and deploy) a function image on a cluster with the actionproxy-function "
                    "Tekton Pipeline, following it like `tkn pipelinerun logs -f` "
                    "(see `actionproxy build --local --help` to build with the local Docker daemon)")
    p.add_argument("--runtime", required=True, choices=RUNTIMES)
    p.add_argument("--target", required=True, choices=TARGETS)
    p.add_argument("--source-url", required=True, metavar="URL", help="git repository with the function")
    p.add_argument("--source-revision", default="", metavar="REV",
                   help="branch, tag or commit (default: the remote's default branch)")
    p.add_argument("--source-subdir", default=".", metavar="DIR", help="the function's folder in the repository")
    p.add_argument("--main", default="main", help="entry point (default: main)")
    p.add_argument("--runtime-image", required=True, metavar="IMAGE@sha256:...",
                   help="the runtime image, pinned by digest")
    p.add_argument("--image", required=True, metavar="OUT", help="the function image to push")
    p.add_argument("--deploy", action="store_true", help="apply a Knative Service running the image")
    p.add_argument("--service-name", default="", metavar="NAME", help="the Knative Service (with --deploy)")
    p.add_argument("--namespace", "-n", metavar="NS",
                   help="default: the kubeconfig context's namespace, else 'default'")
    ws = p.add_mutually_exclusive_group()
    ws.add_argument("--workspace-claim", metavar="PVC", help="an existing PVC for the source workspace")
    ws.add_argument("--workspace-size", default="1Gi", metavar="SIZE",
                    help="size of the per-run volumeClaimTemplate (default: 1Gi)")
    p.add_argument("--docker-config-secret", metavar="SECRET",
                   help="a Secret with config.json for pushing (the dockerconfig workspace)")
    p.add_argument("--service-account", metavar="SA", help="taskRunTemplate.serviceAccountName")
    p.add_argument("--timeout", metavar="DURATION", help="timeouts.pipeline, e.g. 30m")
    p.add_argument("--pipeline", default="actionproxy-function", help=argparse.SUPPRESS)
    p.add_argument("--kubeconfig", metavar="FILE", help="default: $KUBECONFIG, ~/.kube/config, in-cluster")
    p.add_argument("--context", metavar="NAME", help="kubeconfig context")
    p.add_argument("--dry-run", action="store_true", help="print the PipelineRun YAML and exit")
    p.add_argument("--local", action="store_true",
                   help="build with the local Docker daemon instead (its options: `actionproxy build --local --help`, "
                        "among them --ca-bundle FILE for a TLS-intercepting proxy)")
    return p


def manifest(args) -> dict:
    from actionproxy.tools.tekton.pipelinerun import pipelinerun

    return pipelinerun(
        runtime=args.runtime, target=args.target, source_url=args.source_url,
        source_revision=args.source_revision, source_subdir=args.source_subdir, main=args.main,
        runtime_image=args.runtime_image, image=args.image, deploy=args.deploy,
        service_name=args.service_name, workspace_claim=args.workspace_claim,
        workspace_size=args.workspace_size, docker_config_secret=args.docker_config_secret,
        service_account=args.service_account, timeout=args.timeout, pipeline=args.pipeline)


def fail(message: str, code: int) -> int:
    print(f"actionproxy build: {message}", file=sys.stderr)
    return code


def run(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if "@sha256:" not in args.runtime_image:
        return fail("--runtime-image must be pinned by digest (IMAGE@sha256:...)", 2)
    if args.deploy and not args.service_name:
        return fail("--deploy needs --service-name", 2)
    body = manifest(args)
    if args.dry_run:
        import yaml

        sys.stdout.write(yaml.safe_dump(body, sort_keys=False))
        return 0
    try:
        from actionproxy.tools.tekton import client
    except ImportError:
        return fail(EXTRA, 2)
    # Ctrl-C cancels the PipelineRun, even when we were started with SIGINT ignored (a shell's
    # background job, some CI runners): Python then leaves it ignored unless told otherwise
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return submit(client, args, body)


def submit(client, args, body: dict, hook=None) -> int:
    follower = None
    try:
        namespace = args.namespace or client.load_config(args.kubeconfig, args.context)
        if args.namespace:
            client.load_config(args.kubeconfig, args.context)
        follower = client.Follower(namespace)
        follower.hook = hook
        pr = follower.create(body)
        follower.say(f"PipelineRun {pr['metadata']['name']} created in namespace {namespace}")
        return client.report(follower.follow(), follower)
    except client.ClientError as exc:
        return fail(str(exc), exc.code)
    except KeyboardInterrupt:
        if follower is None or follower.name is None:
            return fail("interrupted", 130)
        try:
            follower.cancel()
        except client.ClientError as exc:
            return fail(f"interrupted; cancelling PipelineRun {follower.name} failed: {exc}", 130)
        return fail(f"interrupted: PipelineRun {follower.name} cancelled", 130)
