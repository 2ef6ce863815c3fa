"""The Knative Eventing Trigger (eventing.knative.dev/v1) that `actionproxy ksvc --trigger-broker`
writes after the Service: the broker delivers to the Service the events whose CloudEvents
attributes equal the `--trigger-filter` values, and the proxy hands each one to the function
(actionproxy/http/cloudevents.py).

Names and filters are checked as Knative Eventing checks them (knative/eventing
pkg/apis/eventing/v1 trigger_validation.go and trigger_defaults.go), so that `kubectl apply`
takes what is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
MAX_NAME = 63  # Knative copies both names into label values (eventing.knative.dev/broker, .../trigger)
NAME_RULE = ("a DNS-1123 subdomain of at most 63 characters (a-z, 0-9, '-' and '.', starting and "
             "ending with a letter or digit)")
ATTRIBUTE = re.compile(r"[a-z][a-z0-9]*\Z")  # CloudEvents' a-z0-9; Knative's webhook wants a letter first
MAX_ATTRIBUTE = 20  # CloudEvents 1.0, "Attribute Naming Convention"


def is_name(name: str) -> bool:
    return bool(DNS1123_SUBDOMAIN.match(name)) and len(name) <= MAX_NAME


@dataclass(frozen=True)
class TriggerSpec:
    """The Trigger asked for by the `--trigger-*` options, for the Service `subscriber`; without a
    broker there is none, and `errors` says so if other `--trigger-*` options were given."""

    subscriber: str
    namespace: str | None = None
    broker: str | None = None
    name: str | None = None
    filters: tuple[tuple[str, str], ...] = ()

    @property
    def wanted(self) -> bool:
        return self.broker is not None

    @property
    def effective_name(self) -> str:
        return self.name or f"{self.subscriber}-trigger"

    def errors(self) -> list[str]:
        """What Knative would refuse, and filters that would silently filter nothing."""
        if self.broker is None:
            given = (("--trigger-filter", bool(self.filters)), ("--trigger-name", self.name is not None))
            return [f"{option} needs --trigger-broker: a Trigger takes its events from a broker"
                    for option, present in given if present]
        errors: list[str] = []
        if not is_name(self.broker):
            errors.append(f"--trigger-broker must be a broker name, {NAME_RULE}, not {self.broker!r}")
        if self.name is not None and not is_name(self.name):
            errors.append(f"--trigger-name must be {NAME_RULE}, not {self.name!r}")
        elif self.name is None and len(self.effective_name) > MAX_NAME:  # --name <= 63, plus "-trigger"
            errors.append(f"the default --trigger-name {self.effective_name!r} is longer than {MAX_NAME} "
                          f"characters: give a shorter --trigger-name")
        seen: set[str] = set()
        for key, value in self.filters:
            if not ATTRIBUTE.match(key) or len(key) > MAX_ATTRIBUTE:
                errors.append(f"--trigger-filter {key!r}: a CloudEvents attribute name is 1 to {MAX_ATTRIBUTE} "
                              f"lower-case letters and digits, and Knative wants a letter first")
            elif key in seen:
                errors.append(f"--trigger-filter {key} is given twice: a Trigger compares an attribute "
                              f"with one value")
            elif not value:
                errors.append(f"--trigger-filter {key}=: Knative reads an empty value as any value, so it "
                              f"would filter nothing; leave it out")
            seen.add(key)
        return errors

    def warnings(self, dedicated: bool, reply_type: str) -> list[str]:
        """Triggers that Knative accepts but that deliver what the function cannot take, or loop."""
        if self.broker is None:
            return []
        warnings: list[str] = []
        if not dedicated:
            warnings.append("--trigger-broker on a stem cell: the broker sends events to any container, "
                            "new ones with no action included (500, then retried); give --autoinit")
        if dict(self.filters).get("type") in (None, reply_type):
            warnings.append(f"the Trigger also takes the function's own replies (type {reply_type}), which "
                            f"the broker would send back to it in a loop: give --trigger-filter type=... "
                            f"for the events it is for")
        return warnings

    def manifest(self) -> dict:
        metadata: dict = {"name": self.effective_name}
        ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": self.subscriber}
        if self.namespace is not None:
            metadata["namespace"] = self.namespace
            ref["namespace"] = self.namespace
        spec: dict = {"broker": self.broker}
        if self.filters:
            spec["filter"] = {"attributes": dict(self.filters)}
        spec["subscriber"] = {"ref": ref}
        return {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": metadata, "spec": spec}

    def argv(self) -> list[str]:
        """The `--trigger-*` options that ask for this Trigger, every one spelt out."""
        if self.broker is None:
            return []
        argv = ["--trigger-broker", self.broker, "--trigger-name", self.effective_name]
        for key, value in self.filters:
            argv += ["--trigger-filter", f"{key}={value}"]
        return argv

    def header(self) -> str:
        if self.filters:
            matching = ["the events whose attributes are all equal to these:",
                        *(f"  {key}: {value}" for key, value in self.filters)]
        else:
            matching = ["every event it receives (no --trigger-filter)."]
        lines = [f"Knative Eventing Trigger: the broker `{self.broker}` sends the Service `{self.subscriber}`",
                 *matching,
                 "The function gets the event's attributes as __ce_<name> and JSON object data as its parameters;",
                 "a result without web-action keys is the reply event, which the broker routes in turn.",
                 "See deploy/knative/README.md."]
        return "".join(f"# {line}".rstrip() + "\n" for line in lines)
