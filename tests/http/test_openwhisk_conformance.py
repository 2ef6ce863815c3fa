"""OpenWhisk's public runtime cases (spec section f) for the Python runtime, over real HTTP.

Numbers in the docstrings are the case numbers of spec f.2-f.4. Expectations are the ones
the OpenWhisk Python suites assert (hasCodeStub=false, errorCodeOnRun=false).
"""

from __future__ import annotations

import base64

from conftest import Proxy, zip_b64

TARGETS = ("host", "container")  # every test runs against a host proxy and the runtime image

IDENTITY = "def main(args):\n    return args\n"

ECHO_WITH_LOGS = """
import sys
def main(args):
    print('hello stdout')
    print('hello stderr', file=sys.stderr)
    return args
"""

ENV_SOURCE = """
import os
def main(dict):
    return {
        "api_host": os.environ['__OW_API_HOST'],
        "api_key": os.environ['__OW_API_KEY'],
        "namespace": os.environ['__OW_NAMESPACE'],
        "action_name": os.environ['__OW_ACTION_NAME'],
        "action_version": os.environ['__OW_ACTION_VERSION'],
        "activation_id": os.environ['__OW_ACTIVATION_ID'],
        "deadline": os.environ['__OW_DEADLINE'],
    }
"""

BASH_LOOP = """#!/bin/bash
while read line; do
  name="$(echo "$line" | sed -e 's/.*"name" *: *"\\([^"]*\\)".*/\\1/')"
  echo "{\\"%s\\":\\"Hello, $name\\"}" >&3
done
"""


# ---------------------------------------------------------------- f.2 BasicActionRunnerTests

def test_01_init_with_no_code_is_rejected(proxy: Proxy) -> None:
    """f.2.1: code "" with main "" and env null is not a valid action."""
    status, _ = proxy.init("", main="")
    assert status != 200


def test_02_init_with_no_content(proxy: Proxy) -> None:
    """f.2.2: POST /init {} gets exactly the missing-code error."""
    status, _, raw = proxy.post("/init", {})
    assert status == 403
    assert raw == b'{"error":"Missing main/no code to execute."}'


def test_03_result_not_a_json_object(proxy: Proxy) -> None:
    """f.2.3: a string result is the exact 502 error; the run body is literally {}."""
    assert proxy.init("def main(args):\n    return 'not a json object'\n")[0] == 200
    status, _, raw = proxy.post("/run", b"{}")
    assert status == 502
    assert raw == b'{"error":"The action did not return a dictionary or array."}'
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_04_fail_to_initialize_a_second_time(proxy: Proxy) -> None:
    """f.2.4: second init refused with the exact message; no sentinels at all."""
    assert proxy.init(IDENTITY)[0] == 200
    status, _, raw = proxy.post(
        "/init", {"value": {"code": IDENTITY, "main": "main", "binary": False, "env": None}})
    assert status == 403
    assert raw == b'{"error":"Cannot initialize the action more than once."}'
    out, err = proxy.check_streams(0)
    assert "Cannot initialize the action more than once." in out + err


def test_05_non_standard_entry_point(proxy: Proxy) -> None:
    """f.2.5: main "niam" runs the function named niam."""
    assert proxy.init("def niam(args):\n    return args\n", main="niam")[0] == 200
    assert proxy.run({"string": "hello"}) == (200, {"string": "hello"})
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_06_echo_arguments_and_print_to_both_streams(proxy: Proxy) -> None:
    """f.2.6: four runs echo their input exactly; each writes both streams; 4 sentinels."""
    assert proxy.init(ECHO_WITH_LOGS)[0] == 200
    for value in ({"string": "hello"}, {"string": "❄ ☃ ❄"}, {"numbers": [42, 1]},
                  {"object": {"a": "A"}}):
        assert proxy.run(value) == (200, value)
    out, err = proxy.check_streams(4)
    assert "hello stdout" in out
    assert "hello stderr" in err


def test_07_unicode_in_source_params_logs_and_result(proxy: Proxy) -> None:
    """f.2.7: unicode survives the source, the parameters, the logs and the result."""
    code = (
        "def main(args):\n"
        "    sep = args['delimiter']\n"
        "    s = sep + ' ☃ ' + sep\n"
        "    print(s)\n"
        "    return {'winter': s}\n")
    assert proxy.init(code)[0] == 200
    status, body = proxy.run({"delimiter": "❄"})
    assert status == 200 and body["winter"] == "❄ ☃ ❄"
    out, _ = proxy.check_streams(1)
    assert "❄ ☃ ❄" in out.lower()


def test_08_env_exported_before_initialization(proxy: Proxy) -> None:
    """f.2.8: init env is in os.environ while the module loads."""
    code = (
        "import os\n"
        "some = os.environ['SOME_VAR']\n"
        "another = os.environ['ANOTHER_VAR']\n"
        "def main(args):\n"
        "    return {'SOME_VAR': some, 'ANOTHER_VAR': another}\n")
    assert proxy.init(code, env={"SOME_VAR": "xyz", "ANOTHER_VAR": ""})[0] == 200
    assert proxy.run({}) == (200, {"SOME_VAR": "xyz", "ANOTHER_VAR": ""})
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_09_expected_environment_variables(start_proxy) -> None:
    """f.2.9: every top-level run field is __OW_<KEY>; __OW_API_HOST comes from the container."""
    proxy = start_proxy(env={"__OW_API_HOST": "xyz"})
    assert proxy.init(ENV_SOURCE)[0] == 200
    fields = {"api_key": "abc", "namespace": "zzz", "action_name": "xxx",
              "action_version": "0.0.1", "activation_id": "iii", "deadline": "123"}
    status, body = proxy.run({}, **fields)
    assert status == 200
    assert body == {"api_host": "xyz", **fields}
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_10_echo_a_large_input(proxy: Proxy) -> None:
    """f.2.10: a ~1 MiB parameter (over aiohttp's default body limit) echoes back."""
    assert proxy.init(IDENTITY)[0] == 200
    value = {"arg": "a" * 1048561}
    assert proxy.run(value) == (200, value)


# ---------------------------------------------------------------- f.3 action-loop executables

def test_11_init_that_does_nothing(proxy: Proxy) -> None:
    """f.3.11: init {} is refused (403) and run before a good init is a 500."""
    assert proxy.post("/init", {})[0] == 403
    assert proxy.post("/run", {})[0] == 500


def test_12_deploy_a_shell_script(proxy: Proxy) -> None:
    """f.3.12: a base64 bash action-loop script runs unchanged (stdin line in, fd 3 line out)."""
    script = BASH_LOOP.replace("%s", "main")
    code = base64.b64encode(script.encode()).decode()
    assert proxy.init(code, binary=True)[0] == 200
    assert proxy.run({"name": "Demo"}) == (200, {"main": "Hello, Demo"})
    assert proxy.run({"name": "Again"}) == (200, {"main": "Hello, Again"})


def test_13_deploy_a_zip_based_script(proxy: Proxy) -> None:
    """f.3.13: the same script zipped as `exec`."""
    script = BASH_LOOP.replace("%s", "exec")
    assert proxy.init(zip_b64({"exec": script}, {"exec": 0o755}), binary=True)[0] == 200
    assert proxy.run({"name": "Demo"}) == (200, {"exec": "Hello, Demo"})


def test_13b_plain_text_script_and_array_results(proxy: Proxy) -> None:
    """f.3.14 analogue: arrays in and out through a v1 executable sent as plain text."""
    script = "#!/bin/bash\nwhile read line; do echo '[\"a\",\"b\"]' >&3; done\n"
    assert proxy.init(script)[0] == 200
    status, _, raw = proxy.post("/run", {"value": ["a", "b"]})
    assert status == 200 and raw == b'["a","b"]'


def test_13c_executable_with_ack(start_proxy) -> None:
    """b.2: with OW_WAIT_FOR_ACK the proxy waits for {"ok":true} before the first request."""
    proxy = start_proxy(env={"OW_WAIT_FOR_ACK": "1"})
    script = ("#!/bin/bash\n"
              "[ -n \"$__OW_WAIT_FOR_ACK\" ] && echo '{\"ok\": true}' >&3\n"
              "while read line; do echo '{\"acked\":true}' >&3; done\n")
    assert proxy.init(script)[0] == 200
    assert proxy.run({}) == (200, {"acked": True})


def test_13d_executable_with_bad_ack(start_proxy) -> None:
    """b.2: an ack without ok:true fails the init with the start error."""
    proxy = start_proxy(env={"OW_WAIT_FOR_ACK": "1"})
    script = "#!/bin/bash\necho '{}' >&3\nwhile read line; do echo '{}' >&3; done\n"
    status, body = proxy.init(script)
    assert status == 502 and body == {"error": "Cannot start action. Check logs for details."}
    _, err = proxy.streams()
    assert "The action did not initialize properly." in err


def test_13e_executable_that_exits_at_start(proxy: Proxy) -> None:
    """b.2: an executable that exits before serving fails the init."""
    status, body = proxy.init("#!/bin/bash\nexit 3\n")
    assert status == 502 and body == {"error": "Cannot start action. Check logs for details."}


# ---------------------------------------------------------------- f.4 Python-specific

def test_16_zip_with_non_default_entry_point(proxy: Proxy) -> None:
    """f.4.16: __main__.py imports a sibling module; main is niam."""
    code = zip_b64({
        "__main__.py": "from echo import echo\ndef niam(args):\n    return echo(args)\n",
        "echo.py": "def echo(args):\n    return {'echo': args}\n"})
    assert proxy.init(code, main="niam", binary=True)[0] == 200
    assert proxy.run({"msg": "it works"}) == (200, {"echo": {"msg": "it works"}})
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_17_zip_reads_relative_paths(proxy: Proxy) -> None:
    """f.4.17: the working directory is the action folder."""
    code = zip_b64({
        "__main__.py": "def main(args):\n    with open('workfile') as f:\n        return {'file': f.read()}\n",
        "workfile": "this is a test string"})
    assert proxy.init(code, binary=True)[0] == 200
    assert proxy.run({}) == (200, {"file": "this is a test string"})
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_18_zip_without_required_file(proxy: Proxy) -> None:
    """f.4.18: no __main__.py: init 502, stderr says so, stdout empty."""
    code = zip_b64({"echo.py": "def echo(args):\n    return {'echo': args}\n"})
    assert proxy.init(code, main="echo", binary=True)[0] == 502
    out, err = proxy.streams()
    assert out.replace("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX", "").strip() == ""
    assert "Zip file does not include" in err


def test_19_action_error_when_action_fails(proxy: Proxy) -> None:
    """f.4.19: an exception becomes {"error": ...} (200) with a traceback on stderr."""
    assert proxy.init("def div(x, y):\n    return x / y\ndef main(args):\n    return {'d': div(1, 0)}\n")[0] == 200
    status, body = proxy.run({})
    assert status == 200 and "error" in body
    out, err = proxy.check_streams(1)
    assert out == ""
    assert "Traceback" in err


def test_20_log_compilation_errors(proxy: Proxy) -> None:
    """f.4.20: a syntax error fails the init with 502."""
    status, body = proxy.init('10 PRINT "Hello!"\n')
    assert status == 502
    assert body == {"error": "The action failed to generate or locate a binary. See logs for details."}
    _, err = proxy.check_streams(1)
    assert "SyntaxError" in err


def test_21_application_errors(proxy: Proxy) -> None:
    """f.4.21: a returned {"error": ...} passes through with 200."""
    assert proxy.init("def main(args):\n    return {'error': 'sorry'}\n")[0] == 200
    assert proxy.run({}) == (200, {"error": "sorry"})
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_22_import_of_unsupported_package(proxy: Proxy) -> None:
    """f.4.22: a failing import fails the init (502) with a traceback on stderr."""
    status, _ = proxy.init("import iamnotsupported\ndef main(args):\n    return {}\n")
    assert status == 502
    out, err = proxy.streams()
    assert out.replace("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX", "").strip() == ""
    assert "Traceback" in err


def test_23_valid_sys_executable(proxy: Proxy) -> None:
    """f.4.23: sys.executable is a python."""
    assert proxy.init("import sys\ndef main(args):\n    return {'sys': sys.executable}\n")[0] == 200
    status, body = proxy.run({})
    assert status == 200 and "python" in body["sys"]


def test_24_25_array_result_and_array_input(proxy: Proxy) -> None:
    """f.4.24/25: arrays are valid results and valid parameters."""
    assert proxy.init("def main(args):\n    return args if isinstance(args, list) else ['a', 'b']\n")[0] == 200
    status, _, raw = proxy.post("/run", {"value": {}})
    assert status == 200 and raw == b'["a","b"]'
    status, _, raw = proxy.post("/run", {"value": ["x", 1, None]})
    assert status == 200 and raw == b'["x",1,null]'


def test_26_detect_termination_at_run(proxy: Proxy) -> None:
    """f.4.26: sys.exit(1) in main is a 400 with 'command exited'; one sentinel each."""
    assert proxy.init("import sys\ndef main(args):\n    sys.exit(1)\n")[0] == 200
    status, body = proxy.run({})
    assert status == 400 and "command exited" in body["error"]
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_27_detect_termination_at_init(proxy: Proxy) -> None:
    """f.4.27: module-level sys.exit(1) fails the init: Cannot start action."""
    status, body = proxy.init("import sys\nsys.exit(1)\ndef main(args):\n    return {}\n")
    assert status == 502 and "Cannot start action" in body["error"]
    out, err = proxy.streams()
    assert out.replace("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX", "").strip() == ""
    assert "Command exited abruptly during initialization." in err


def test_28_read_an_environment_variable_at_load(proxy: Proxy) -> None:
    """f.4.28: init env visible at module level; the print lands on stdout."""
    code = "import os\nprint(os.getenv('X'))\ndef main(args):\n    return {'body': 'ok'}\n"
    assert proxy.init(code, env={"X": "xyz"})[0] == 200
    assert proxy.run({}) == (200, {"body": "ok"})
    out, _ = proxy.streams()
    assert "xyz" in out


def test_31_invalid_virtualenv_directory(proxy: Proxy) -> None:
    """f.4.31: a virtualenv/ folder without activate_this.py or site-packages fails the init."""
    code = zip_b64({"__main__.py": "def main(args):\n    return {}\n", "virtualenv/README": "empty"})
    status, body = proxy.init(code, binary=True)
    assert status == 502
    assert "action failed" in body["error"] or "Invalid virtualenv" in body["error"]
    _, err = proxy.streams()
    assert "Invalid virtualenv" in err


def test_virtualenv_in_zip_is_activated(proxy: Proxy) -> None:
    """Issue 2 item 5: a virtualenv/ folder in the zip puts its packages on sys.path."""
    code = zip_b64({
        "__main__.py": "import vendored\ndef main(args):\n    return {'v': vendored.VERSION}\n",
        "virtualenv/lib/python3.11/site-packages/vendored.py": "VERSION = '1.2.3'\n"})
    assert proxy.init(code, binary=True)[0] == 200
    assert proxy.run({}) == (200, {"v": "1.2.3"})


def test_virtualenv_activate_this_is_run(proxy: Proxy) -> None:
    """A virtualenv made by `virtualenv` carries bin/activate_this.py: it is executed."""
    activate = ("import os, sys\n"
                "base = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))\n"
                "sys.path.insert(0, os.path.join(base, 'pkgs'))\n")
    code = zip_b64({
        "__main__.py": "import vendored\ndef main(args):\n    return {'v': vendored.VERSION}\n",
        "virtualenv/bin/activate_this.py": activate,
        "virtualenv/pkgs/vendored.py": "VERSION = 'from-activate'\n"})
    assert proxy.init(code, binary=True)[0] == 200
    assert proxy.run({}) == (200, {"v": "from-activate"})


def test_async_main(proxy: Proxy) -> None:
    """Issue 2 item 5: `async def main` is awaited (the reference fails on the coroutine)."""
    code = "import asyncio\nasync def main(args):\n    await asyncio.sleep(0.01)\n    return {'async': args}\n"
    assert proxy.init(code)[0] == 200
    assert proxy.run({"n": 1}) == (200, {"async": {"n": 1}})
    out, err = proxy.check_streams(1)
    assert out == "" and err == ""


def test_base64_source_with_binary_true(proxy: Proxy) -> None:
    """a.2: the controller marks base64-looking code binary; a base64 source still loads."""
    code = base64.b64encode(IDENTITY.encode()).decode()
    assert proxy.init(code, binary=True)[0] == 200
    assert proxy.run({"a": 1}) == (200, {"a": 1})


def test_env_null_code_null_missing_main(proxy: Proxy) -> None:
    """a.2: env null and a missing main are accepted; code null is the missing-code error."""
    assert proxy.post("/init", {"value": {"code": None, "env": None}})[0] == 403
    assert proxy.post("/init", {"value": {"code": IDENTITY, "env": None}})[0] == 200
    assert proxy.run({"k": "v"}) == (200, {"k": "v"})
