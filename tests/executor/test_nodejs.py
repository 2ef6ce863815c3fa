"""The Node.js runtime (`--runtime nodejs`, the nodejs launcher, launchers/nodejs/launcher.js), over real HTTP.

Numbers in the docstrings are the case numbers of spec f.5 (OpenWhisk's NodeJsActionContainerTests).
Expectations are OpenWhisk's, except where our issue decided otherwise and the docstring says so:
a thrown error is an application error (200 with `error`), as in the Python runtime.

Cases that do not apply to a runtime on the host:
- 43 (`require('openwhisk')`): the OpenWhisk image pre-installs the `openwhisk` npm client at `/`;
  our launcher uses only Node's own modules and the host has no global npm packages to offer.
  Actions that need a package bring it in their zip's node_modules (case 58).
- 59 (user packages in a Docker action): needs a custom image built `FROM` the runtime image.
- 63 (concurrency refused without `__OW_ALLOW_CONCURRENT`): our proxy always runs activations
  concurrently; 64 and the tests after it prove that instead.

Beyond f.5: per-activation `process.env.__OW_*` and console attribution under concurrency,
deadlines (cancel, then kill after the grace), process.exit, a launcher crash, result shapes.
Concurrency is proven by data (barriers inside the action, ids carried back), never by timing.
"""

from __future__ import annotations

import base64
import json
import re
import resource
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conftest import SENTINEL, Proxy, run_async, zip_b64

TARGETS = ("host", "container")  # every test runs against a host proxy and the runtime image

NOT_A_DICT = b'{"error":"The action did not return a dictionary or array."}'
CANCELLED = "The action did not finish by its deadline and it was cancelled."
COMPILE_FAILED = "The action failed to generate or locate a binary. See logs for details."
START_FAILED = "Cannot start action. Check logs for details."


PACKAGE_JSON = json.dumps({
    "name": "wskaction", "version": "1.0.0", "description": "An OpenWhisk action as an npm package.",
    "main": "index.js", "author": "info@openwhisk.org", "license": "Apache-2.0"})

GREETER = """
exports.%s = function (args) {
    var name = typeof args["name"] === "string" ? args["name"] : "stranger";
    return { greeting: "Hello " + name + ", %s" };
}
"""

# Resolves with true once `n` activations have called it; false after 30 s (a cap, not a timing).
BARRIER = """
let arrived = 0;
const waiting = [];
function barrier(n) {
    arrived++;
    return new Promise((resolve) => {
        const cap = setTimeout(() => resolve(false), 30000);
        waiting.push(() => { clearTimeout(cap); resolve(true); });
        if (arrived >= n) for (const go of waiting.splice(0)) go();
    });
}
"""

INTERLEAVE = BARRIER + """
function main(args) {
    console.log("interleave me");
    return barrier(args.n).then((all) => all ? { args } : { error: `only ${arrived} of ${args.n} arrived` });
}
"""

CONTEXT = """
const read = () => ({ id: process.env.__OW_ACTIVATION_ID, deadline: process.env.__OW_DEADLINE });
async function main(args) {
    const before = read();
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 50));
    return { i: args.i, before, after: read() };
}
"""

ATTRIBUTION = BARRIER + """
async function main(args) {
    const me = args.id;
    console.log("begin " + me);
    console.error("oops " + me);
    if (!await barrier(args.n)) return { error: `only ${arrived} of ${args.n} arrived` };
    await new Promise((resolve) => setTimeout(resolve, Math.random() * 20));
    console.log("end " + me);
    return { id: me };
}
"""

# `mode` picks the behaviour; every other run reports the process and what it has seen so far.
FAULTS = """
let starts = 0;
let aborted = 0;
let arrived = 0;
async function main(args) {
    starts++;
    arrived++;
    if (args.mode === "hang") {
        globalThis.__ow_activation.signal.addEventListener("abort", () => { aborted++; });
        return new Promise(() => {});
    }
    if (args.mode === "spin") while (true) {}
    if (args.mode === "exit") process.exit(3);
    if (args.mode === "hold") await new Promise((resolve) => setTimeout(resolve, 30000));
    if (args.mode === "kill") {
        while (arrived < args.n) await new Promise((resolve) => setTimeout(resolve, 5));
        process.kill(process.pid, "SIGKILL");
    }
    return { pid: process.pid, starts, aborted };
}
"""


# ---------------------------------------------------------------- helpers

def node(start_proxy, env: dict[str, str] | None = None) -> Proxy:
    return start_proxy(runtime="nodejs", env=env)


def started(proxy: Proxy, code: str, main: str = "main", binary: bool = False) -> Proxy:
    """`proxy` with `code` initialized (200)."""
    assert proxy.init(code, main=main, binary=binary) == (200, {"ok": True})
    return proxy


def zipped(proxy: Proxy, files: dict[str, str], main: str = "main") -> Proxy:
    """`proxy` with a zip of `files` initialized (200)."""
    return started(proxy, zip_b64(files), main=main, binary=True)


def assert_quiet(proxy: Proxy, sentinels: int = 1) -> None:
    """`sentinels` sentinels on each stream and nothing else."""
    assert proxy.check_streams(sentinels) == ("", "")


def logs(proxy: Proxy, sentinels: int = 1) -> str:
    """Both streams together, sentinels counted and removed."""
    out, err = proxy.check_streams(sentinels)
    return out + "\n" + err


def deadline_in(ms: int) -> str:
    return str(int(time.time() * 1000) + ms)


def blocks(stream: str) -> list[str]:
    """The text of each activation between consecutive sentinels; nothing may follow the last one."""
    parts = stream.split(SENTINEL + "\n")
    assert parts[-1] == "", f"output after the last sentinel: {parts[-1][:200]!r}"
    return parts[:-1]


def allow_open_files(count: int) -> None:
    """Raise this process's soft fd limit (the proxy inherits it) for `count` sockets each side."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 512
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))



def assert_command_exited(status: int, body: Any, detail: str) -> None:
    assert status == 400, body
    assert body["error"].startswith("command exited") and detail in body["error"], body


# ---------------------------------------------------------------- f.5: source actions

def test_32_bad_code_fails_init(start_proxy) -> None:
    """f.5.32: BASIC is not JavaScript: init fails; the logs say error and syntax; 1 sentinel each."""
    proxy = node(start_proxy)
    status, body = proxy.init('10 PRINT "Hello world!"\n20 GOTO 10\n')
    assert (status, body) == (502, {"error": COMPILE_FAILED})
    text = logs(proxy).lower()
    assert "error" in text and "syntax" in text


def test_33_no_code_fails_init(start_proxy) -> None:
    """f.5.33: init with code "" is refused with `no code to execute`."""
    status, body = node(start_proxy).init("")
    assert status != 200
    assert "no code to execute" in body["error"]


def test_34_thrown_error_is_an_application_error(start_proxy) -> None:
    """f.5.34, deliberately unlike OpenWhisk (run != 200): our issue makes `throw "nooooo"` an application error, 200 with `error` containing nooooo."""
    proxy = started(node(start_proxy), 'function main(args) {\n    throw "nooooo";\n}\n')
    status, body = proxy.run({})
    assert status == 200
    assert "nooooo" in json.dumps(body["error"]).lower()
    out, err = proxy.check_streams(1)
    assert out == "" and "nooooo" in err


def test_35_application_errors(start_proxy) -> None:
    """f.5.35: a returned {"error": ...} is passed through with 200."""
    proxy = started(node(start_proxy), 'function main(args) {\n    return { "error" : "sorry" };\n}\n')
    assert proxy.run({}) == (200, {"error": "sorry"})
    assert_quiet(proxy)


def test_36_documentation_examples_1(start_proxy) -> None:
    """f.5.36: `return;` gives {}, a payload, and an application error, all 200; 3 sentinels, empty streams."""
    code = """
// an action in which each path results in a synchronous activation
function main(params) {
    if (params.payload == 0) {
        return;
    } else if (params.payload == 1) {
        return {payload: 'Hello, World!'}         // indicates normal completion
    } else if (params.payload == 2) {
        return {error: 'payload must be 0 or 1'}  // indicates abnormal completion
    }
}
"""
    proxy = started(node(start_proxy), code)
    assert proxy.run({"payload": 0}) == (200, {})
    assert proxy.run({"payload": 1}) == (200, {"payload": "Hello, World!"})
    assert proxy.run({"payload": 2}) == (200, {"error": "payload must be 0 or 1"})
    assert_quiet(proxy, 3)


def test_37_documentation_examples_2(start_proxy) -> None:
    """f.5.37: a sync result and a promise resolved after 100 ms are both {"done": true}; 2 sentinels."""
    code = """
function main(params) {
    if (params.payload) {
        // asynchronous activation
        return new Promise(function(resolve, reject) {
            setTimeout(function() { resolve({ done: true }); }, 100);
        })
    } else {
        // synchronous activation
        return {done: true};
    }
}
"""
    proxy = started(node(start_proxy), code)
    assert proxy.run({}) == (200, {"done": True})
    assert proxy.run({"payload": True}) == (200, {"done": True})
    assert_quiet(proxy, 2)


def test_38_variables_with_no_var_declaration(start_proxy) -> None:
    """f.5.38: an undeclared assignment works (sloppy mode); stdout is exactly `hello, test!`."""
    code = """
function main(params) {
    greeting = 'hello, ' + params.payload + '!'
    console.log(greeting);
    return {payload: greeting}
}
"""
    proxy = started(node(start_proxy), code)
    assert proxy.run({"payload": "test"}) == (200, {"payload": "hello, test!"})
    assert proxy.check_streams(1) == ("hello, test!", "")


@pytest.mark.parametrize("case,code", [
    ("39 global.main", "function foo() {\n  return { bar: true }\n}\nglobal.main = foo\n"),
    ("40 exports.main", "exports.main = function () {\n  return { bar: true }\n}\n"),
    ("41 module.exports.main", "module.exports.main = () => ({ bar: true });\n"),
])
def test_39_40_41_main_found_where_bundlers_put_it(start_proxy, case: str, code: str) -> None:
    """f.5.39-41: main exported as global.main (webpack), exports.main or module.exports.main runs; a bare {} body too."""
    proxy = started(node(start_proxy), code)
    status, _, raw = proxy.post("/run", b"{}")
    assert (status, json.loads(raw)) == (200, {"bar": True}), case
    assert_quiet(proxy)


def test_42_requiring_a_missing_package_at_load_time_fails_init(start_proxy) -> None:
    """f.5.42 (load time): a top-level require of a missing package fails /init with 502 Cannot start action; the logs say Error."""
    proxy = node(start_proxy)
    code = "const x = require('.mildlyinvalidnameofanonexistentpackage');\nfunction main(args) { return {}; }\n"
    assert proxy.init(code) == (502, {"error": START_FAILED})
    text = logs(proxy)
    assert re.search("Error|error", text)
    assert "Cannot find module '.mildlyinvalidnameofanonexistentpackage'" in text


def test_42_requiring_a_missing_package_in_main_is_an_application_error(start_proxy) -> None:
    """f.5.42 (in main): OpenWhisk wants run != 200; our launcher makes the throw a 200 application error (MODULE_NOT_FOUND), logged."""
    proxy = started(node(start_proxy),
                    "function main(args) {\n    require('.mildlyinvalidnameofanonexistentpackage');\n}\n")
    status, body = proxy.run({})
    assert status == 200
    assert body["error"]["code"] == "MODULE_NOT_FOUND"
    assert "Cannot find module '.mildlyinvalidnameofanonexistentpackage'" in body["error"]["message"]
    assert re.search("Error|error", logs(proxy))


def test_44_resolved_promises(start_proxy) -> None:
    """f.5.44: a promise resolved after 100 ms is the result; empty streams."""
    code = ("function main(args) {\n    return new Promise(function(resolve, reject) {\n"
            "        setTimeout(function() { resolve({ done: true }); }, 100);\n    })\n}\n")
    proxy = started(node(start_proxy), code)
    assert proxy.run({}) == (200, {"done": True})
    assert_quiet(proxy)


def test_45_rejected_promises(start_proxy) -> None:
    """f.5.45: a promise rejected with an object is 200 with that object as `error`."""
    code = ("function main(args) {\n    return new Promise(function(resolve, reject) {\n"
            "        setTimeout(function() { reject({ done: true }); }, 100);\n    })\n}\n")
    proxy = started(node(start_proxy), code)
    assert proxy.run({}) == (200, {"error": {"done": True}})


def test_46_rejected_promises_with_no_message(start_proxy) -> None:
    """f.5.46: `reject()` with nothing still gives a defined `error` ({} as OpenWhisk's serialize-error)."""
    code = "function main(args) {\n    return new Promise(function (resolve, reject) {\n        reject();\n    });\n}\n"
    proxy = started(node(start_proxy), code)
    assert proxy.run({}) == (200, {"error": {}})


def test_47_large_ish_actions(start_proxy) -> None:
    """f.5.47: a source of at least 500,000 characters loads and runs."""
    thought = " I took the one less traveled by, and that has made all the difference."
    code = ('function main(args) {\n    var x = "hello";\n' + f'    x = "{thought}";\n' * 7000
            + '    x = "world";\n    return { "message" : x };\n}\n')
    assert len(code) >= 500_000
    proxy = started(node(start_proxy), code)
    assert proxy.run({}) == (200, {"message": "world"})
    assert_quiet(proxy)


def test_57_default_function_parameters(start_proxy) -> None:
    """f.5.57: default parameters work."""
    code = ("function main(args) {\n    let foo = 3;\n"
            "    return {isValid: (function (a, b = 2) {return a === 3 && b === 2;}(foo))};\n}\n")
    proxy = started(node(start_proxy), code)
    assert proxy.run({}) == (200, {"isValid": True})
    assert_quiet(proxy)


def test_60_async_await(start_proxy) -> None:
    """f.5.60: an async main that awaits a promise returns its value."""
    code = """
function sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); }
async function main(args) {
    await sleep(50);
    const who = await Promise.resolve(args.name);
    return { message: `Hello ${who}!` };
}
"""
    proxy = started(node(start_proxy), code)
    assert proxy.run({"name": "Ada"}) == (200, {"message": "Hello Ada!"})
    assert_quiet(proxy)


def test_61_errors_thrown_from_async_functions(start_proxy) -> None:
    """f.5.61: a ReferenceError in an async main is 200 with `error` mentioning `referenceerror: a is not defined`."""
    proxy = started(node(start_proxy), "async function main() {\n    return a + b;\n}\n")
    status, body = proxy.run({})
    assert status == 200
    assert "referenceerror: a is not defined" in json.dumps(body["error"]).lower()


def test_62_user_thrown_errors_from_async_functions(start_proxy) -> None:
    """f.5.62: `throw new Error("app error")` in an async main is 200 with that message in `error`."""
    proxy = started(node(start_proxy), 'async function main() {\n    throw new Error("app error");\n}\n')
    status, body = proxy.run({})
    assert status == 200
    assert body["error"]["message"] == "app error" and body["error"]["name"] == "Error"


# ---------------------------------------------------------------- f.5: zipped actions

@pytest.mark.parametrize("entry", ["index.js", "lib/app.js"])
def test_48_zip_encoded_npm_package(start_proxy, entry: str) -> None:
    """f.5.48: a zip with package.json and the file its "main" names runs that file's exports.main."""
    package = json.dumps({**json.loads(PACKAGE_JSON), "main": entry})
    proxy = zipped(node(start_proxy), {"package.json": package,
                                       entry: GREETER % ("main", "from an npm package action.")})
    assert proxy.run({}) == (200, {"greeting": "Hello stranger, from an npm package action."})
    assert_quiet(proxy)


def test_49_zip_without_package_json(start_proxy) -> None:
    """f.5.49: a zip with only index.js runs its exports.main."""
    text = "from an npm package action without a package.json."
    proxy = zipped(node(start_proxy), {"index.js": GREETER % ("main", text)})
    assert proxy.run({}) == (200, {"greeting": "Hello stranger, " + text})
    assert_quiet(proxy)


def test_50_main_from_a_file_other_than_index_js(start_proxy) -> None:
    """f.5.50: main `other.niam` runs exports.niam of other.js (no package.json, no index.js)."""
    proxy = zipped(node(start_proxy), {"other.js": GREETER % ("niam", "from other.niam.")}, main="other.niam")
    assert proxy.run({}) == (200, {"greeting": "Hello stranger, from other.niam."})
    assert_quiet(proxy)


def test_51_nested_main(start_proxy) -> None:
    """f.5.51: main `other.niam.xyz` runs exports.niam.xyz of other.js."""
    code = ("exports.niam = { xyz: function (args) {\n"
            "    return { greeting: 'Hello ' + (args.name || 'stranger') + ', from nested main.' };\n} }\n")
    proxy = zipped(node(start_proxy), {"other.js": code}, main="other.niam.xyz")
    assert proxy.run({"name": "Ada"}) == (200, {"greeting": "Hello Ada, from nested main."})
    assert_quiet(proxy)


def test_52_package_json_with_overriding_entry_point(start_proxy) -> None:
    """f.5.52: with package.json and index.js present, main `other.niam` still runs other.js."""
    proxy = zipped(node(start_proxy), {
        "package.json": PACKAGE_JSON,
        "index.js": "exports.main = function (args) {\n    return { result: 'it works' };\n}\n",
        "other.js": "exports.niam = function (args) {\n    return { result: 'it should also work' };\n}\n",
    }, main="other.niam")
    assert proxy.run({}) == (200, {"result": "it should also work"})
    assert_quiet(proxy)


def test_53_invalid_zip_files_fail_gracefully(start_proxy) -> None:
    """f.5.53: base64 text sent as binary is not an archive: init fails, the logs say error and syntax."""
    proxy = node(start_proxy)
    status, body = proxy.init(base64.b64encode(b"Ceci n'est pas un zip.\n").decode(), binary=True)
    assert status != 200 and "error" in body
    text = logs(proxy).lower()
    assert "error" in text and re.search("syntax|uncompressing", text)


def test_54_valid_zip_that_is_not_an_action(start_proxy) -> None:
    """f.5.54: a zip without package.json or index.js fails init, saying what a zip must contain."""
    proxy = node(start_proxy)
    assert proxy.init(zip_b64({"hello": "Hello world!\n"}), binary=True) == (502, {"error": START_FAILED})
    text = logs(proxy).lower()
    assert re.search("error|exited", text)
    assert "zipped actions must contain either package.json or index.js at the root." in text


def test_55_zip_with_non_default_entry_point(start_proxy) -> None:
    """f.5.55: main `niam` runs exports.niam of the package's index.js."""
    proxy = zipped(node(start_proxy), {
        "package.json": PACKAGE_JSON,
        "index.js": "exports.niam = function (args) {\n    return { result: 'it works' };\n}\n"}, main="niam")
    assert proxy.run({}) == (200, {"result": "it works"})
    assert_quiet(proxy)


def test_56_cwd_of_zipped_actions(start_proxy) -> None:
    """f.5.56: a zipped action reads ./test.txt, and __dirname === process.cwd()."""
    proxy = zipped(node(start_proxy), {
        "package.json": PACKAGE_JSON,
        "test.txt": "test text",
        "index.js": ("const fs = require('fs');\nexports.main = function (args) {\n"
                     "    const fileData = fs.readFileSync('./test.txt').toString();\n"
                     "    return { result1: fileData, result2: __dirname === process.cwd() };\n}\n")})
    assert proxy.run({}) == (200, {"result1": "test text", "result2": True})
    assert_quiet(proxy)


def test_58_user_npm_packages_in_a_zip(start_proxy) -> None:
    """f.5.58: index.js requires a package that the zip carries in node_modules/."""
    proxy = zipped(node(start_proxy), {
        "package.json": json.dumps({"name": "test", "main": "index.js", "dependencies": {"local-lib": "1.0.0"}}),
        "index.js": ("const lib = require('local-lib');\n"
                     "exports.main = function (args) {\n    return { message: lib.hello() };\n}\n"),
        "node_modules/local-lib/package.json": json.dumps({"name": "local-lib", "version": "1.0.0",
                                                           "main": "lib/hello.js"}),
        "node_modules/local-lib/lib/hello.js": "exports.hello = () => 'hello local library';\n"})
    assert proxy.run({}) == (200, {"message": "hello local library"})
    assert_quiet(proxy)


# ---------------------------------------------------------------- concurrency

def test_64_concurrent_activations_with_one_log_block_each(start_proxy) -> None:
    """f.5.64, stricter: 150 activations all in flight at once each get their args; one `interleave me` per sentinel block."""
    n = 150
    allow_open_files(2 * n)
    proxy = started(node(start_proxy, {"__OW_ALLOW_CONCURRENT": "true"}), INTERLEAVE)
    payloads = [{"value": {"i": i, "n": n}} for i in range(n)]
    assert run_async(proxy, payloads) == [(200, {"args": p["value"]}) for p in payloads]
    out, err = proxy.check_streams(n)
    assert " ".join(out.split()) == " ".join(["interleave me"] * n)
    assert err == ""
    raw_out, _ = proxy.streams(settle=0)
    assert blocks(raw_out) == ["interleave me\n"] * n


def test_env_is_per_activation_under_concurrency(start_proxy) -> None:
    """1000 concurrent activations each read their own __OW_ACTIVATION_ID and __OW_DEADLINE, before and after awaiting."""
    n = 1000
    allow_open_files(2 * n)
    proxy = started(node(start_proxy), CONTEXT)
    now_ms = int(time.time() * 1000)
    payloads = [{"value": {"i": i}, "activation_id": uuid.uuid4().hex, "deadline": str(now_ms + 120_000 + i)}
                for i in range(n)]
    mismatches = []
    for payload, (status, body) in zip(payloads, run_async(proxy, payloads)):
        expected = {"id": payload["activation_id"], "deadline": payload["deadline"]}
        if (status, body) != (200, {"i": payload["value"]["i"], "before": expected, "after": expected}):
            mismatches.append((payload, status, body))
    assert len(mismatches) == 0, mismatches[:5]


def test_console_output_is_attributed_per_activation_under_concurrency(start_proxy) -> None:
    """100 activations log begin, meet at a barrier, log end: each sentinel block holds exactly one id's lines, on both streams."""
    n = 100
    proxy = started(node(start_proxy), ATTRIBUTION)
    ids = [f"act{i:03d}" for i in range(n)]
    results = run_async(proxy, [{"value": {"id": i, "n": n}, "activation_id": i} for i in ids])
    assert results == [(200, {"id": i}) for i in ids]
    out, err = proxy.streams()
    out_ids, err_ids = [], []
    for block in blocks(out):
        me = block.split()[-1] if block.strip() else "<empty>"
        assert block == f"begin {me}\nend {me}\n", f"mixed block: {block!r}"
        out_ids.append(me)
    for block in blocks(err):
        me = block.split()[-1] if block.strip() else "<empty>"
        assert block == f"oops {me}\n", f"mixed block: {block!r}"
        err_ids.append(me)
    assert sorted(out_ids) == ids and sorted(err_ids) == ids


# ---------------------------------------------------------------- deadlines, exits, crashes

def test_deadline_cancels_a_never_resolving_async_action(start_proxy) -> None:
    """A promise that never settles gets 502 cancelled at its deadline; the launcher aborts its signal and serves on, same process."""
    proxy = started(node(start_proxy), FAULTS)
    status, first = proxy.run({})
    assert status == 200 and first["aborted"] == 0
    assert proxy.run({"mode": "hang"}, deadline=deadline_in(1000)) == (502, {"error": CANCELLED})
    status, body = proxy.run({})
    assert status == 200, body
    assert body == {"pid": first["pid"], "starts": 3, "aborted": 1}


def test_deadline_kills_a_busy_launcher_after_the_grace(start_proxy) -> None:
    """`while(true){}` past its deadline: 502 cancelled, the launcher is killed after the 300 ms grace and restarted; the next run works."""
    proxy = started(node(start_proxy, {"ACTIONPROXY_CANCEL_GRACE_MS": "300"}), FAULTS)
    status, first = proxy.run({})
    assert status == 200, first
    assert proxy.run({"mode": "spin"}, deadline=deadline_in(1000)) == (502, {"error": CANCELLED})
    status, body = proxy.run({})
    if status == 400:  # sent to the spinning launcher before its grace ran out: it shared its fate
        assert_command_exited(status, body, "ignored its cancellation past the grace period")
        status, body = proxy.run({})
    assert status == 200, body
    assert body["pid"] != first["pid"] and body["starts"] == 1, "a new launcher, loaded from the saved init"


def test_process_exit_inside_main_is_400_and_the_launcher_stays(start_proxy) -> None:
    """process.exit(3) in main answers 400 command exited with code 3; the same launcher serves the next run."""
    proxy = started(node(start_proxy), FAULTS)
    status, first = proxy.run({})
    assert status == 200, first
    assert proxy.run({"mode": "exit"}) == (400, {"error": "command exited: the action asked to exit with code 3"})
    status, body = proxy.run({})
    assert status == 200, body
    assert body["pid"] == first["pid"] and body["starts"] == 3


def test_launcher_crash_fails_inflight_activations_and_restarts(start_proxy) -> None:
    """SIGKILL of the launcher while 6 activations are in flight fails all 6 with command exited (SIGKILL); the next run works."""
    n = 6
    proxy = started(node(start_proxy), FAULTS)
    status, first = proxy.run({})
    assert status == 200, first
    with ThreadPoolExecutor(n) as pool:
        holders = [pool.submit(proxy.run, {"mode": "hold"}) for _ in range(n - 1)]
        killer = pool.submit(proxy.run, {"mode": "kill", "n": n + 1})  # +1: the first run arrived too
        results = [f.result() for f in holders + [killer]]
    for status, body in results:
        assert_command_exited(status, body, "SIGKILL")
    status, body = proxy.run({})
    assert status == 200, body
    assert body["pid"] != first["pid"] and body["starts"] == 1, "a new launcher, loaded from the saved init"
    out, err = proxy.check_streams(n + 2)
    assert out == "" and "SIGKILL" in err


# ---------------------------------------------------------------- result and input shapes

@pytest.mark.parametrize("value", ["not a json object", 42, True, None])
def test_non_object_results_are_502(start_proxy, value: Any) -> None:
    """A string, number, boolean or null result is 502 with exactly `The action did not return a dictionary or array.`"""
    proxy = started(node(start_proxy), "function main(args) {\n    return args.result;\n}\n")
    status, _, raw = proxy.post("/run", {"value": {"result": value}})
    assert (status, raw) == (502, NOT_A_DICT)
    out, err = proxy.check_streams(1)
    assert out == "" and "Result must be of type object" in err


def test_arrays_are_valid_results_and_inputs(start_proxy) -> None:
    """An array returned is a 200 result, and an array `value` reaches main as an array."""
    code = "function main(args) {\n    return Array.isArray(args) ? args.concat(['seen']) : ['a', 'b'];\n}\n"
    proxy = started(node(start_proxy), code)
    assert proxy.run({}) == (200, ["a", "b"])
    assert proxy.run([1, "x", {"y": None}]) == (200, [1, "x", {"y": None}, "seen"])
    assert_quiet(proxy, 2)


@pytest.mark.parametrize("size", [1, 3 << 20], ids=["small", "3MiB"])
def test_text_of_every_width_crosses_intact(start_proxy, size: int) -> None:
    """The launcher reads ASCII requests as Latin-1 (cheaper) and anything else as UTF-8, and
    writes results of several buffers gathered: ASCII, Latin-1, CJK and emoji values, alone and
    beside each other, small and several MiB (more than the pipe holds), come back unchanged,
    also when they are in flight at once."""
    proxy = started(node(start_proxy), "function main(args) {\n    return { echo: args.s, n: args.s.length };\n}\n")
    texts = ["plain ascii", "café über", "数据流", "🙂 emoji", "ascii then é", "\x7f\x00 edges"]
    values = [(text * (size // len(text.encode()) + 1)) for text in texts]

    def run(value: str) -> tuple[int, Any]:  # raw UTF-8 on the wire, not \u escapes
        status, body, _ = proxy.post("/run", json.dumps({"value": {"s": value}}, ensure_ascii=False).encode())
        return status, body

    with ThreadPoolExecutor(len(values)) as pool:
        answers = list(pool.map(run, values))
    for value, (status, body) in zip(values, answers):
        assert status == 200 and body == {"echo": value, "n": len(value.encode("utf-16-le")) // 2}
    assert_quiet(proxy, len(values))


def test_large_results_finished_together_stay_apart(start_proxy) -> None:
    """A large result is encoded into a buffer the launcher reuses, so it must leave before the
    next one is encoded: many synchronous activations answered in one batch (their requests read
    together) each get their own result, never a neighbour's bytes."""
    code = "function main(args) {\n    return { id: args.id, s: String.fromCharCode(97 + args.id % 26).repeat(200000) };\n}\n"
    proxy = started(node(start_proxy), code)
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda n: proxy.run({"id": n}), range(128)))
    for n, (status, body) in enumerate(answers):
        assert status == 200 and body["id"] == n and body["s"] == chr(97 + n % 26) * 200000, n
    assert_quiet(proxy, 128)
