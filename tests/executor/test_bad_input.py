"""Values the process environment cannot carry (a NUL byte, `=` or nothing in a name, a NUL
in a value), in /run fields and /init env, for every runtime.

Top-level /run fields become `__OW_<KEY>` variables of the activation and /init env is
exported before the code loads. Every runtime must answer such input clearly and keep
running: launchers that hold the context per activation give it to the action as it came
(Python sync and async alike, Node.js); a one-shot executable can only get it through its
real environment, so the field is refused with a 400 naming it; /init env that cannot be
exported is refused with a 400 naming the entry, and a later good /init still works.
"""

from __future__ import annotations

import pytest

from conftest import Proxy

ENV_RULE = "an environment variable's name must be non-empty, without '=' or NUL, and its value without NUL"
OK = {"ok": True}

# Fields the environment cannot carry, and the variables the action must still see.
BAD_FIELDS = {"api_key": "a\u0000b", "a=b": "x", "x\u0000y": "v"}
SEEN = {"__OW_API_KEY": "a\u0000b", "__OW_A=B": "x", "__OW_X\u0000Y": "v", "__OW_NAMESPACE": "ns"}

PY_SYNC = """
import os
def main(args):
    return {"env": {k: os.environ.get(k) for k in args["keys"]}, "pid": os.getpid()}
"""
PY_ASYNC = PY_SYNC.replace("def main", "async def main")
NODE = """
function main(args) {
  const env = {};
  for (const k of args.keys) env[k] = process.env[k] === undefined ? null : process.env[k];
  return {env, pid: process.pid};
}
"""
ACTIONS = {"python-sync": ("python", PY_SYNC), "python-async": ("python", PY_ASYNC), "nodejs": ("nodejs", NODE)}

# A `def main` worker's subprocess sees the real environment: exportable fields only, and
# nothing left over from the worker's previous activation.
PY_SUBPROCESS = """
import json, os, subprocess, sys
SHOW = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k in %r}))"
def main(args):
    out = subprocess.run([sys.executable, "-c", SHOW % (args["keys"],)], capture_output=True, text=True).stdout
    return {"sub": json.loads(out), "own": os.environ.get("__OW_API_KEY"), "pid": os.getpid()}
"""

BLACKBOX_ENV = "#!/bin/bash\necho \"{\\\"key\\\": \\\"$__OW_API_KEY\\\"}\"\n"
LOOP_EXEC = """#!/bin/bash
count=0
while read -r line; do
  count=$((count + 1))
  echo "{\\"count\\": $count, \\"line\\": $line}" >&3
done
"""

BAD_INIT_ENVS = [{"A": "x\u0000y"}, {"A=B": "x"}, {"A\u0000B": "x"}, {"": "x"}]


def field_error(field: str, name: str) -> dict:
    return {"error": f"The activation field {field!r} cannot be passed to the executable as the "
                     f"environment variable {name!r}: {ENV_RULE}."}


def init_env_error(name: str) -> dict:
    return {"error": f"The /init env entry {name!r} cannot be exported: {ENV_RULE}."}


@pytest.mark.parametrize("action", list(ACTIONS))
def test_unexportable_run_fields_reach_the_action_and_it_keeps_running(start_proxy, action: str) -> None:
    """Every launcher mode gives the action the same `__OW_*` values, NUL and `=` included, and the
    process that ran it (the one `def main` worker, or the launcher) answers the next activation."""
    runtime, code = ACTIONS[action]
    proxy = start_proxy(runtime, env={"ACTIONPROXY_MAX_WORKERS": "1"})
    assert proxy.init(code) == (200, OK)
    status, first = proxy.run({"keys": list(SEEN)}, namespace="ns", **BAD_FIELDS)
    assert (status, first["env"]) == (200, SEEN), first
    status, after = proxy.run({"keys": ["__OW_API_KEY"]}, api_key="good")
    assert (status, after["env"], after["pid"]) == (200, {"__OW_API_KEY": "good"}, first["pid"])


def test_def_main_subprocesses_get_exportable_fields_only_and_nothing_stale(start_proxy) -> None:
    """A `def main` worker exports what it can for its subprocesses; a field it cannot export is not
    replaced there by the previous activation's value, and the worker lives on."""
    proxy = start_proxy("python", env={"ACTIONPROXY_MAX_WORKERS": "1"})
    assert proxy.init(PY_SUBPROCESS) == (200, OK)
    keys = ["__OW_API_KEY", "__OW_NAMESPACE", "__OW_ACTIVATION_ID", "__OW_A=B"]
    status, first = proxy.run({"keys": keys}, api_key="k1", namespace="ns1")
    assert (status, first["sub"]) == (200, {"__OW_API_KEY": "k1", "__OW_NAMESPACE": "ns1"}), first
    status, second = proxy.run({"keys": keys}, api_key="a\u0000b", activation_id="act2", **{"a=b": "x"})
    assert status == 200, second
    assert second == {"sub": {"__OW_ACTIVATION_ID": "act2"}, "own": "a\u0000b", "pid": first["pid"]}


@pytest.mark.parametrize("field, name", [("api_key", "__OW_API_KEY"), ("a=b", "__OW_A=B"),
                                         ("x\u0000y", "__OW_X\u0000Y")])
def test_blackbox_exec_refuses_a_field_its_environment_cannot_carry(start_proxy, field: str, name: str) -> None:
    """A one-shot exec gets the context only in its environment: such a field is a 400 that names it."""
    proxy = start_proxy("blackbox")
    assert proxy.init(BLACKBOX_ENV) == (200, OK)
    assert proxy.run({}, **{field: BAD_FIELDS[field]}) == (400, field_error(field, name))
    assert proxy.run({}, api_key="good") == (200, {"key": "good"})


def test_blackbox_loop_executable_gets_the_fields_on_its_json_line(start_proxy) -> None:
    """A v1 action-loop executable reads the context from its JSON line and exports what it can:
    the proxy passes the line on, and the same process answers the next activation."""
    proxy = start_proxy("blackbox", env={"ACTIONPROXY_BLACKBOX_MODE": "loop"})
    assert proxy.init(LOOP_EXEC) == (200, OK)
    status, first = proxy.run({"n": 1}, **BAD_FIELDS)
    trace = first["line"].pop("traceparent", "")  # the proxy appends the activation's trace context
    assert (status, first) == (200, {"count": 1, "line": {"value": {"n": 1}, **BAD_FIELDS}}), first
    assert trace.startswith("00-") and len(trace) == 55
    status, second = proxy.run({"n": 2})
    second["line"].pop("traceparent")
    assert (status, second) == (200, {"count": 2, "line": {"value": {"n": 2}}})


@pytest.mark.parametrize("runtime, code, env", [
    ("python", PY_SYNC, {}), ("nodejs", NODE, {}), ("blackbox", BLACKBOX_ENV, {}),
    ("blackbox", LOOP_EXEC, {"ACTIONPROXY_BLACKBOX_MODE": "loop"})],
    ids=["python", "nodejs", "blackbox", "blackbox-loop"])
def test_init_env_that_cannot_be_exported_is_400_naming_it(start_proxy, runtime: str, code: str,
                                                          env: dict) -> None:
    """Each bad /init env entry is refused with a 400 naming it, before anything is loaded; the
    container then takes a good /init and runs it."""
    proxy = start_proxy(runtime, env=env)
    for bad in BAD_INIT_ENVS:
        (name,) = bad
        assert proxy.init(code, env={"GOOD": "1", **bad}) == (400, init_env_error(name)), bad
    assert proxy.init(code, env={"GOOD": "1"}) == (200, OK)
    status, _ = proxy.run({"keys": []})
    assert status == 200


def test_knative_init_env_that_cannot_be_exported_is_400_naming_it(start_proxy) -> None:
    """The same rule in the Knative envelope: init+run with a bad env entry answers the init's 400."""
    proxy: Proxy = start_proxy("python", env={"__OW_RUNTIME_PLATFORM": "knative"})
    init = {"code": PY_SYNC, "main": "main", "env": {"A=B": "x"}}
    status, body, _ = proxy.post("/", {"init": init, "value": {"keys": []}})
    assert (status, body) == (400, init_env_error("A=B"))
    init["env"] = {"A": "b"}
    status, body, _ = proxy.post("/", {"init": init, "value": {"keys": ["A"]}})
    assert (status, body["env"]) == (200, {"A": "b"}), body
