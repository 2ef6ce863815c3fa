"""`actionproxy ksvc`: a Knative Serving Service (serving.knative.dev/v1) for an actionproxy image,
and with `--trigger-broker` a Knative Eventing Trigger (trigger.py) that sends it a broker's events.

Writes the manifest as YAML to stdout or a file (`-o`); with a Trigger, two YAML documents, the
Service first. Two kinds of Service, told apart by `--autoinit`:

- dedicated: the function is baked into the image; OW_AUTOINIT names it and the proxy loads it
  at start-up, or exits non-zero with the reason in its log if it cannot;
- stem cell: no code in the image; actions arrive by `init` in a request, which is only useful
  behind an external control plane, so the Service is cluster-local unless told otherwise.

The settings follow deploy/knative/README.md: one port 8080 named http1, readiness and liveness
on that port (readiness GET /healthz, liveness GET /livez), containerConcurrency equal to ACTIONPROXY_MAX_CONCURRENT, a memory
limit (the proxy's memory guard acts at 90% of it), a non-root read-only container with an
emptyDir on /tmp, and the autoscaling annotations. PyYAML is imported only when the command
runs, so `actionproxy serve` does not pay for it.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from actionproxy import __version__
from actionproxy.http.cloudevents import DEFAULT_TYPE as REPLY_TYPE  # the proxy's reply event type
from actionproxy.tools.trigger import TriggerSpec

PORT = 8080
PORT_NAME = "http1"  # HTTP/1.1 only; the other name Knative allows, h2c, is HTTP/2 cleartext
HEALTH_PATH = "/healthz"
LIVENESS_PATH = "/livez"  # only fails when the proxy is broken; /healthz also says "full"
PLATFORM_ENV = ("__OW_RUNTIME_PLATFORM", "knative")
VISIBILITY_LABEL = "networking.knative.dev/visibility"
VISIBILITIES = ("public", "cluster-local")

DEFAULT_CONCURRENCY = 100
KNATIVE_DEFAULT_TARGET = 100  # config-autoscaler container-concurrency-target-default
DEFAULT_TIMEOUT = 300
KNATIVE_DEFAULT_MAX_TIMEOUT = 600  # config-defaults max-revision-timeout-seconds
DEFAULT_MEMORY = "256Mi"
MIN_MEMORY = 64 * 1024 * 1024  # the proxy and one launcher, with room for a small function
DEFAULT_TMP_SIZE = "512Mi"
DEFAULT_MIN_SCALE = 0
DEFAULT_MAX_SCALE = 10

DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*\Z")  # what every Kubernetes version accepts
QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?\Z")
UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
         "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
RESERVED_ENV = ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION")  # Knative sets these
OWN_ENV = {  # set from the options; a second value in --env would contradict them
    "__OW_RUNTIME_PLATFORM": "this manifest always selects the knative platform",
    "ACTIONPROXY_MAX_CONCURRENT": "use --concurrency, which sets it and containerConcurrency together",
    "OW_AUTOINIT": "use --autoinit",
    "OW_AUTOINIT_MAIN": "use --main",
}


def quantity_bytes(raw: str, what: str) -> int:
    """A Kubernetes quantity without sign, exponent or milli (`256Mi`, `1G`, `536870912`)."""
    match = QUANTITY.match(raw)
    if match is None:
        raise ValueError(f"{what} must be a Kubernetes quantity such as 256Mi, 1Gi or 512M, not {raw!r}")
    return int(float(match.group(1)) * UNITS[match.group(2)])


@dataclass(frozen=True)
class ServiceSpec:
    """What `actionproxy ksvc` is asked for; `validate` says what is wrong with it."""

    name: str
    image: str
    namespace: str | None = None
    autoinit: str | None = None
    main: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    target: int | None = None
    timeout: int = DEFAULT_TIMEOUT
    memory: str = DEFAULT_MEMORY
    tmp_size: str = DEFAULT_TMP_SIZE
    min_scale: int = DEFAULT_MIN_SCALE
    max_scale: int = DEFAULT_MAX_SCALE
    visibility: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    trigger_broker: str | None = None
    trigger_name: str | None = None
    trigger_filters: tuple[tuple[str, str], ...] = ()

    @property
    def dedicated(self) -> bool:
        return self.autoinit is not None

    @property
    def effective_visibility(self) -> str:
        """A stem cell runs whatever code a request brings: keep it off the internet by default."""
        return self.visibility or ("public" if self.dedicated else "cluster-local")

    @property
    def effective_target(self) -> int:
        if self.target is not None:
            return self.target
        return self.concurrency or KNATIVE_DEFAULT_TARGET

    @property
    def trigger(self) -> TriggerSpec:
        return TriggerSpec(subscriber=self.name, namespace=self.namespace, broker=self.trigger_broker,
                           name=self.trigger_name, filters=self.trigger_filters)

    def validate(self) -> list[str]:
        """Raises ValueError for what Knative or the proxy would refuse; returns warnings."""
        errors: list[str] = []
        warnings: list[str] = []
        if not DNS1035_LABEL.match(self.name) or len(self.name) > 63:
            errors.append(f"--name must be a DNS-1035 label (at most 63 characters of a-z, 0-9 and '-', "
                          f"starting with a letter and not ending with '-'), not {self.name!r}")
        if self.namespace is not None and (not DNS1123_LABEL.match(self.namespace) or len(self.namespace) > 63):
            errors.append(f"--namespace must be a DNS-1123 label, not {self.namespace!r}")
        if not self.image or any(c.isspace() for c in self.image) or self.image != self.image.strip("/:@"):
            errors.append(f"--image must be an image reference such as registry.example.com/fn/hello:1 "
                          f"or ...@sha256:<digest>, not {self.image!r}")
        if self.autoinit is not None and not self.autoinit.startswith("/"):
            errors.append(f"--autoinit is a path inside the image and must be absolute, not {self.autoinit!r}")
        if self.main is not None:
            if self.autoinit is None:
                errors.append("--main names the entry point of --autoinit: give --autoinit too "
                              "(a stem cell gets its entry point with each init)")
            elif not self.main or any(c.isspace() for c in self.main):
                errors.append(f"--main must be a function name such as main or handler.run, not {self.main!r}")
        if self.concurrency < 0:
            errors.append(f"--concurrency must be 0 (unlimited in Knative) or more, not {self.concurrency}")
        elif self.concurrency == 0:
            warnings.append("--concurrency 0 lets Knative send any number of requests to one container, "
                            "while the proxy still refuses more than its own cap (ACTIONPROXY_MAX_CONCURRENT, "
                            "10000 by default) with 503; see deploy/knative/README.md")
        if self.target is not None:
            if self.target < 1:
                errors.append(f"--target must be at least 1, not {self.target}")
            elif self.concurrency and self.target > self.concurrency:
                errors.append(f"--target ({self.target}) cannot exceed --concurrency ({self.concurrency}): "
                              f"a container never holds more than --concurrency requests")
        if self.timeout < 1:
            errors.append(f"--timeout must be at least 1 second, not {self.timeout}")
        elif self.timeout > KNATIVE_DEFAULT_MAX_TIMEOUT:
            warnings.append(f"--timeout {self.timeout} is above Knative's default max-revision-timeout-seconds "
                            f"({KNATIVE_DEFAULT_MAX_TIMEOUT}): the cluster's config-defaults must allow it")
        try:
            if quantity_bytes(self.memory, "--memory") < MIN_MEMORY:
                errors.append(f"--memory {self.memory} is too small: the proxy and a launcher need at least 64Mi")
        except ValueError as exc:
            errors.append(str(exc))
        try:
            quantity_bytes(self.tmp_size, "--tmp-size")
        except ValueError as exc:
            errors.append(str(exc))
        if self.min_scale < 0:
            errors.append(f"--min-scale must be 0 or more, not {self.min_scale}")
        if self.max_scale < 0:
            errors.append(f"--max-scale must be 0 (no limit) or more, not {self.max_scale}")
        elif self.max_scale and self.min_scale > self.max_scale:
            errors.append(f"--min-scale ({self.min_scale}) cannot exceed --max-scale ({self.max_scale})")
        if self.visibility is not None and self.visibility not in VISIBILITIES:
            errors.append(f"--visibility must be public or cluster-local, not {self.visibility!r}")
        seen: set[str] = set()
        for key, _ in self.env:
            if not ENV_NAME.match(key):
                errors.append(f"--env {key!r}: a variable name is letters, digits, '_', '-' and '.', "
                              f"not starting with a digit")
            elif key in RESERVED_ENV:
                errors.append(f"--env {key}: Knative reserves {key} and sets it itself")
            elif key in OWN_ENV:
                errors.append(f"--env {key}: {OWN_ENV[key]}")
            elif key in seen:
                errors.append(f"--env {key} is given twice")
            seen.add(key)
        errors.extend(self.trigger.errors())
        if errors:
            raise ValueError("\n".join(errors))
        reply_type = dict(self.env).get("ACTIONPROXY_CE_TYPE") or REPLY_TYPE
        return warnings + self.trigger.warnings(self.dedicated, reply_type)

    # ------------------------------------------------------------------ the manifest
    def container_env(self) -> list[dict[str, str]]:
        env = [{"name": PLATFORM_ENV[0], "value": PLATFORM_ENV[1]}]
        if self.concurrency:
            env.append({"name": "ACTIONPROXY_MAX_CONCURRENT", "value": str(self.concurrency)})
        if self.autoinit is not None:
            env.append({"name": "OW_AUTOINIT", "value": self.autoinit})
            env.append({"name": "OW_AUTOINIT_MAIN", "value": self.main or "main"})
        env.extend({"name": key, "value": value} for key, value in self.env)
        return env

    def manifest(self) -> dict:
        metadata: dict = {"name": self.name}
        if self.namespace is not None:
            metadata["namespace"] = self.namespace
        if self.effective_visibility == "cluster-local":
            metadata["labels"] = {VISIBILITY_LABEL: "cluster-local"}
        annotations = {
            "autoscaling.knative.dev/min-scale": str(self.min_scale),
            "autoscaling.knative.dev/max-scale": str(self.max_scale),
            "autoscaling.knative.dev/target": str(self.effective_target),
        }
        container: dict = {
            "image": self.image,
            "ports": [{"name": PORT_NAME, "containerPort": PORT}],
            "env": self.container_env(),
            "resources": {"requests": {"memory": self.memory}, "limits": {"memory": self.memory}},
            # no periodSeconds: Knative's queue-proxy then probes every 25 ms until ready (cold start)
            "readinessProbe": {"httpGet": {"path": HEALTH_PATH}},
            "livenessProbe": {"httpGet": {"path": LIVENESS_PATH},
                              "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
            "securityContext": {
                "runAsNonRoot": True,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }
        spec: dict = {
            "containerConcurrency": self.concurrency,
            "timeoutSeconds": self.timeout,
            "containers": [container],
        }
        if quantity_bytes(self.tmp_size, "--tmp-size"):
            container["volumeMounts"] = [{"name": "tmp", "mountPath": "/tmp"}]
            spec["volumes"] = [{"name": "tmp", "emptyDir": {"sizeLimit": self.tmp_size}}]
        return {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {"template": {"metadata": {"annotations": annotations}, "spec": spec}},
        }

    def command(self, width: int = 0) -> str:
        """The `actionproxy ksvc` command line that writes this manifest, every option spelt out;
        with `width`, continued over lines (`\\`) at option boundaries."""
        argv = ["actionproxy", "ksvc", "--image", self.image, "--name", self.name]
        if self.namespace is not None:
            argv += ["--namespace", self.namespace]
        if self.autoinit is not None:
            argv += ["--autoinit", self.autoinit, "--main", self.main or "main"]
        argv += ["--concurrency", str(self.concurrency)]
        if self.target is not None:
            argv += ["--target", str(self.target)]
        argv += ["--timeout", str(self.timeout), "--memory", self.memory, "--tmp-size", self.tmp_size,
                 "--min-scale", str(self.min_scale), "--max-scale", str(self.max_scale)]
        if self.visibility is not None:
            argv += ["--visibility", self.visibility]
        for key, value in self.env:
            argv += ["--env", f"{key}={value}"]
        argv += self.trigger.argv()
        if not width:
            return shlex.join(argv)
        lines = [shlex.join(argv[:2])]
        for i in range(2, len(argv), 2):
            option = shlex.join(argv[i:i + 2])
            if len(lines[-1]) + 1 + len(option) > width:
                lines[-1] += " \\"
                lines.append("    " + option)
            else:
                lines[-1] += " " + option
        return "\n".join(lines)

    def header(self) -> str:
        if self.dedicated:
            kind = [f"Dedicated function image: the proxy loads {self.autoinit} (entry point "
                    f"{self.main or 'main'}) at start-up",
                    "(/healthz is 503 until then), and exits non-zero with the reason in its log if it cannot."]
        else:
            kind = ["Stem-cell runtime: no code in the image; each action arrives by `init` in a request.",
                    "Only useful behind an external control plane that sends the init (init+run in one",
                    "request), since Knative routes every request to any container, new ones included."]
        if self.concurrency:
            cap = [f"containerConcurrency = ACTIONPROXY_MAX_CONCURRENT = {self.concurrency}: Knative queues the requests",
                   "above the cap instead of the proxy refusing them (503). Change both together."]
        else:
            cap = ["containerConcurrency 0 (no limit in Knative): the proxy keeps its own cap",
                   "(ACTIONPROXY_MAX_CONCURRENT, 10000 by default) and answers 503 above it."]
        command = ["  " + line for line in self.command(width=90).splitlines()]
        lines = [f"Knative Service for actionproxy, written by actionproxy {__version__}:",
                 *command, "", *kind, *cap,
                 f"The proxy's memory guard acts at 90% of the {self.memory} limit.",
                 *(["Cluster-local (networking.knative.dev/visibility): no route from outside the cluster."]
                   if self.effective_visibility == "cluster-local" else []),
                 "See deploy/knative/README.md."]
        return "".join(f"# {line}".rstrip() + "\n" for line in lines)

    def render(self) -> str:
        """The Service, then the Trigger if one is asked for, as one multi-document YAML stream."""
        text = self.header() + to_yaml(self.manifest())
        if self.trigger.wanted:
            text += "---\n" + self.trigger.header() + to_yaml(self.trigger.manifest())
        return text


def to_yaml(document: dict) -> str:
    import yaml  # only when a manifest is written: `actionproxy serve` never imports it

    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=100)


# ---------------------------------------------------------------------------------- the command
def add_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    ksvc = commands.add_parser(
        "ksvc", help="write a Knative Service manifest (serving.knative.dev/v1) for an image",
        description="Write a Knative Serving Service (serving.knative.dev/v1) for an actionproxy image, "
                    "as YAML. With --autoinit the image is a dedicated function; without it, a stem cell "
                    "(cluster-local by default). See deploy/knative/README.md.")
    ksvc.add_argument("--image", required=True, help="image reference (a digest pins the revision)")
    ksvc.add_argument("--name", required=True, help="Service name: a DNS-1035 label")
    ksvc.add_argument("--namespace", help="namespace (default: the one kubectl applies to)")
    ksvc.add_argument("--autoinit", metavar="PATH",
                      help="the function inside the image (file, folder or zip): sets OW_AUTOINIT")
    ksvc.add_argument("--main", metavar="NAME", help="entry point of --autoinit (default: main)")
    ksvc.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                      help="containerConcurrency and ACTIONPROXY_MAX_CONCURRENT, the same number "
                           f"(default: {DEFAULT_CONCURRENCY}; 0 = no Knative limit, not advised)")
    ksvc.add_argument("--target", type=int, metavar="N",
                      help="autoscaling.knative.dev/target, in-flight requests per container the "
                           "autoscaler aims at (default: --concurrency)")
    ksvc.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, metavar="S",
                      help=f"timeoutSeconds, the longest a request may take (default: {DEFAULT_TIMEOUT})")
    ksvc.add_argument("--memory", default=DEFAULT_MEMORY, metavar="QUANTITY",
                      help=f"memory request and limit (default: {DEFAULT_MEMORY})")
    ksvc.add_argument("--tmp-size", default=DEFAULT_TMP_SIZE, metavar="QUANTITY",
                      help=f"sizeLimit of the emptyDir on /tmp (default: {DEFAULT_TMP_SIZE}; 0 = no volume)")
    ksvc.add_argument("--min-scale", type=int, default=DEFAULT_MIN_SCALE, metavar="N",
                      help=f"autoscaling.knative.dev/min-scale (default: {DEFAULT_MIN_SCALE}, scale to zero)")
    ksvc.add_argument("--max-scale", type=int, default=DEFAULT_MAX_SCALE, metavar="N",
                      help=f"autoscaling.knative.dev/max-scale (default: {DEFAULT_MAX_SCALE}; 0 = no limit)")
    ksvc.add_argument("--visibility", choices=VISIBILITIES,
                      help="public, or cluster-local (default: public with --autoinit, else cluster-local)")
    ksvc.add_argument("--env", action="extend", nargs="+", default=[], metavar="K=V",
                      help="more environment variables for the container")
    ksvc.add_argument("--trigger-broker", metavar="NAME",
                      help="also write a Knative Eventing Trigger (eventing.knative.dev/v1) that sends the "
                           "events of this broker to the Service")
    ksvc.add_argument("--trigger-filter", action="append", default=[], metavar="KEY=VALUE",
                      help="only the events whose CloudEvents attribute KEY is VALUE, e.g. "
                           "type=com.example.order.created (repeatable: all must match)")
    ksvc.add_argument("--trigger-name", metavar="NAME", help="the Trigger's name (default: <--name>-trigger)")
    ksvc.add_argument("-o", "--output", metavar="FILE", help="write here instead of to stdout")
    return ksvc


def pairs(items: list[str], option: str, form: str) -> tuple[tuple[str, str], ...]:
    """`K=V` arguments as (K, V), in order; the value may be empty or hold more `=`."""
    result = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{option} takes {form}, not {item!r}")
        result.append((key, value))
    return tuple(result)


def spec_from_args(args: argparse.Namespace) -> ServiceSpec:
    return ServiceSpec(name=args.name, image=args.image, namespace=args.namespace,
                       autoinit=args.autoinit, main=args.main, concurrency=args.concurrency,
                       target=args.target, timeout=args.timeout, memory=args.memory,
                       tmp_size=args.tmp_size, min_scale=args.min_scale, max_scale=args.max_scale,
                       visibility=args.visibility, env=pairs(args.env, "--env", "NAME=VALUE"),
                       trigger_broker=args.trigger_broker, trigger_name=args.trigger_name,
                       trigger_filters=pairs(args.trigger_filter, "--trigger-filter", "KEY=VALUE"))


def run(args: argparse.Namespace) -> int:
    try:
        spec = spec_from_args(args)
        warnings = spec.validate()
    except ValueError as exc:
        for line in str(exc).splitlines():
            print(f"actionproxy ksvc: error: {line}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"actionproxy ksvc: warning: {warning}", file=sys.stderr)
    text = spec.render()
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    try:
        Path(args.output).write_text(text)
    except OSError as exc:
        print(f"actionproxy ksvc: error: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    return 0
