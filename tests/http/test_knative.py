"""Knative mode (spec c, tekton-knative 5.3): the single `/` route, envelopes and bare bodies,
start-up auto-init of dedicated images, web-action responses, parameter binding."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from conftest import Proxy, docker, free_port, image, require_docker, zip_b64

KNATIVE = {"__OW_RUNTIME_PLATFORM": "knative"}
HELLO = "function main(params) { return {payload: 'Hello World!'}; }"
HELLO_PARAMS = "function main(params) { return {payload: 'Hello ' + params.name + ' from ' + params.place + '!'}; }"
WEB_HELLO = ("function main(params) {\n"
             "  if (params.name) return {body: '<html><body><h3>hello ' + params.name + '</h3></body></html>'};\n"
             "  return {body: '<html><body><h3>you did not tell me who you are.</h3></body></html>'};\n"
             "}\n")
JOE_TX = {"value": {"name": "Joe", "place": "TX"}}


def call(proxy: Proxy, body: bytes | dict | None = None, method: str = "POST", path: str = "/",
         content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    """Any request to the proxy; returns (status, headers, raw body)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(proxy.base + path, data=data, method=method,
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def dedicated(start_proxy, code: str, runtime: str = "nodejs", tmp: Path | None = None,
              env: dict[str, str] | None = None, binary: bool = False) -> Proxy:
    """A dedicated container: the action given through __OW_ACTION_CODE, loaded at start-up."""
    settings = {**KNATIVE, "__OW_ACTION_CODE": code, **(env or {})}
    if binary:
        settings["__OW_ACTION_BINARY"] = "true"
    return start_proxy(runtime, env=settings)


# ---------------------------------------------------------------- c.4 contract examples

def test_c4_hello_world(start_proxy) -> None:
    """c.4 Hello World: 200 application/json {"payload":"Hello World!"}."""
    proxy = dedicated(start_proxy, HELLO)
    status, headers, body = call(proxy, JOE_TX)
    assert (status, json.loads(body)) == (200, {"payload": "Hello World!"})
    assert headers["Content-Type"].startswith("application/json")


def test_c4_hello_world_with_params(start_proxy) -> None:
    """c.4 Hello World With Params: the value object is the parameters."""
    proxy = dedicated(start_proxy, HELLO_PARAMS)
    status, _, body = call(proxy, JOE_TX)
    assert (status, json.loads(body)) == (200, {"payload": "Hello Joe from TX!"})


def test_c4_web_action_with_and_without_input(start_proxy) -> None:
    """c.4 Web Action Hello World: a string body is text/html, with or without input."""
    proxy = dedicated(start_proxy, WEB_HELLO)
    status, headers, body = call(proxy, {"value": {"name": "Joe"}})
    assert (status, body) == (200, b"<html><body><h3>hello Joe</h3></body></html>")
    assert headers["Content-Type"].startswith("text/html")
    status, headers, body = call(proxy, None)
    assert status == 200 and b"you did not tell me who you are." in body


def test_c4_web_action_raw(start_proxy) -> None:
    """c.4 Web Action Raw: with __OW_ACTION_RAW the input is only the HTTP context, the
    value base64-encoded in __ow_body."""
    proxy = dedicated(start_proxy, "function main(params) { return {response: params}; }",
                      env={"__OW_ACTION_RAW": "true"})
    status, _, body = call(proxy, {"value": {"name": "Joe"}})
    response = json.loads(body)["response"]
    assert status == 200
    assert response["__ow_body"] == "eyJuYW1lIjoiSm9lIn0="
    assert (response["__ow_query"], response["__ow_user"], response["__ow_method"], response["__ow_path"]) == (
        {}, "", "POST", "")
    assert response["__ow_headers"]["content-type"] == "application/json"
    assert "name" not in response


def test_c4_init_that_does_nothing(start_proxy) -> None:
    """c.4: a stem cell refuses an init without code (403); a run before any init is a 500."""
    proxy = start_proxy("nodejs", env=KNATIVE)
    assert call(proxy, {"init": {}})[0] == 403
    assert call(proxy, JOE_TX)[0] == 500


def test_c4_zip_based_script_and_not_main(start_proxy) -> None:
    """c.4: a zipped action, and src / zipped src with __OW_ACTION_MAIN=hello."""
    zipped = zip_b64({"index.js": HELLO.replace("function main", "function main") + "\nexports.main = main;\n"})
    proxy = dedicated(start_proxy, zipped, binary=True)
    assert json.loads(call(proxy, JOE_TX)[2]) == {"payload": "Hello World!"}
    hello = HELLO.replace("function main", "function hello")
    proxy = dedicated(start_proxy, hello, env={"__OW_ACTION_MAIN": "hello"})
    assert json.loads(call(proxy, JOE_TX)[2]) == {"payload": "Hello World!"}
    zipped = zip_b64({"index.js": hello + "\nexports.hello = hello;\n"})
    proxy = dedicated(start_proxy, zipped, binary=True, env={"__OW_ACTION_MAIN": "hello"})
    assert json.loads(call(proxy, JOE_TX)[2]) == {"payload": "Hello World!"}


# ---------------------------------------------------------------- envelopes and bodies

def test_stem_cell_init_then_run_and_init_run_in_one(start_proxy) -> None:
    """A stem cell takes {"init"} then {"activation","value"}, or both in one request."""
    proxy = start_proxy("python", env=KNATIVE)
    code = "import os\ndef main(args):\n    return {'got': args.get('x'), 'id': os.environ['__OW_ACTIVATION_ID']}\n"
    status, _, body = call(proxy, {"init": {"code": code}})
    assert (status, json.loads(body)) == (200, {"ok": True})
    status, _, body = call(proxy, {"activation": {"activation_id": "k1"}, "value": {"x": 1}})
    assert (status, json.loads(body)) == (200, {"got": 1, "id": "k1"})
    other = start_proxy("python", env=KNATIVE)
    status, _, body = call(other, {"init": {"code": code}, "activation": {"activation_id": "k2"}, "value": {"x": 2}})
    assert (status, json.loads(body)) == (200, {"got": 2, "id": "k2"})


def test_stem_cell_accepts_the_same_init_again_but_not_another(start_proxy) -> None:
    """Routing sends init+run to any container: the init of the loaded action is a no-op there,
    a different action is refused (403), and the runs keep working."""
    proxy = start_proxy("python", env=KNATIVE)
    init = {"code": "def main(a):\n    return {'n': a.get('n')}\n"}
    for n in (1, 2):
        status, _, body = call(proxy, {"init": init, "activation": {}, "value": {"n": n}})
        assert (status, json.loads(body)) == (200, {"n": n})
    other = {"code": "def main(a):\n    return {}\n"}
    assert call(proxy, {"init": other, "activation": {}, "value": {}})[0] == 403


def test_bare_json_text_and_binary_bodies(start_proxy) -> None:
    """Any body is input: a bare JSON object is the parameters; text and binary bodies arrive
    in __ow_body (binary base64-encoded), with the method, path, headers and query."""
    code = ("def main(a):\n"
            "    return {k: a[k] for k in ('x', '__ow_body', '__ow_method', '__ow_query') if k in a}\n")
    proxy = dedicated(start_proxy, code, runtime="python")
    assert json.loads(call(proxy, {"x": 5})[2]) == {"x": 5, "__ow_method": "POST", "__ow_query": {}}
    _, _, body = call(proxy, b"just text", content_type="text/plain", path="/?q=1")
    assert json.loads(body) == {"__ow_body": "just text", "__ow_method": "POST", "__ow_query": {"q": "1"}}
    _, _, body = call(proxy, b"\x00\x01\xff", content_type="application/octet-stream")
    assert json.loads(body)["__ow_body"] == base64.b64encode(b"\x00\x01\xff").decode()
    assert call(proxy, b"{not json", content_type="application/json")[0] == 400


def test_k_service_context_and_generated_activation_id(start_proxy) -> None:
    """K_SERVICE/K_REVISION/K_CONFIGURATION are in the activation context; an id is made up."""
    code = ("import os\ndef main(a):\n"
            "    return {k: os.environ.get(k) for k in ('__OW_K_SERVICE', '__OW_K_REVISION', '__OW_ACTIVATION_ID')}\n")
    proxy = dedicated(start_proxy, code, runtime="python",
                      env={"K_SERVICE": "hello", "K_REVISION": "hello-00001"})
    body = json.loads(call(proxy, {})[2])
    assert (body["__OW_K_SERVICE"], body["__OW_K_REVISION"]) == ("hello", "hello-00001")
    assert len(body["__OW_ACTIVATION_ID"]) == 32


def test_http_methods_from_env_and_cors_preflight(start_proxy) -> None:
    """__OW_HTTP_METHODS selects the methods of `/`; OPTIONS answers CORS without running."""
    proxy = dedicated(start_proxy, "def main(a):\n    return {'m': a['__ow_method'], 'q': a.get('q')}\n",
                      runtime="python", env={"__OW_HTTP_METHODS": "[GET,POST]"})
    assert json.loads(call(proxy, method="GET", path="/?q=7")[2]) == {"m": "GET", "q": "7"}
    assert call(proxy, {}, method="PUT")[0] in (404, 405)
    status, headers, _ = call(proxy, method="OPTIONS")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"


# ---------------------------------------------------------------- web-action responses

RESPONDER = """
import base64
def main(a):
    kind = a.get('kind')
    if kind == 'status':
        return {'statusCode': 201, 'headers': {'X-Thing': 'yes'}, 'body': {'made': True}}
    if kind == 'empty':
        return {'body': ''}
    if kind == 'image':
        return {'headers': {'Content-Type': 'image/png'}, 'body': base64.b64encode(b'\\x89PNG').decode()}
    if kind == 'cors':
        return {'headers': {'Access-Control-Allow-Origin': 'https://example.org'}, 'body': 'x'}
    if kind == 'error':
        return {'error': 'bad input'}
    if kind == 'crash':
        raise ValueError('boom')
    return {'plain': True}
"""


@pytest.mark.parametrize("kind, status, check", [
    ("status", 201, lambda h, b: h["X-Thing"] == "yes" and json.loads(b) == {"made": True}),
    ("empty", 204, lambda h, b: b == b""),
    ("image", 200, lambda h, b: h["Content-Type"] == "image/png" and b == b"\x89PNG"),
    ("cors", 200, lambda h, b: h["Access-Control-Allow-Origin"] == "https://example.org"),
    ("error", 400, lambda h, b: json.loads(b) == {"error": "bad input"}),
    ("crash", 400, lambda h, b: json.loads(b) == {"error": "boom"}),
    ("plain", 200, lambda h, b: json.loads(b) == {"plain": True}),
])
def test_web_action_responses(start_proxy, kind: str, status: int, check: Any) -> None:
    """statusCode/headers/body, 204 for an empty body, base64 binary bodies, CORS defaults
    (spelt right, and not overriding the action's), application errors as a JSON 400."""
    proxy = dedicated(start_proxy, RESPONDER, runtime="python")
    got, headers, body = call(proxy, {"kind": kind})
    assert got == status, body
    assert check(headers, body)
    if kind != "cors":
        assert headers["Access-Control-Allow-Headers"] == (
            "Authorization, Origin, X-Requested-With, Content-Type, Accept, User-Agent")


# ---------------------------------------------------------------- web responses the action got wrong

RETURNS = "def main(a):\n    return a['result']\n"  # the request says what the action returns
INJECTED = "x-injected"


def _answer(connection: http.client.HTTPConnection, result: Any) -> tuple[int, dict[str, list[str]], bytes]:
    """The action returns `result`. Read on one keep-alive connection with http.client, which
    takes the bytes as sent: a wrong Content-Length would garble the answer after this one."""
    connection.request("POST", "/", json.dumps({"result": result}), {"Content-Type": "application/json"})
    response = connection.getresponse()
    headers: dict[str, list[str]] = {}
    for name, value in response.getheaders():
        headers.setdefault(name.lower(), []).append(value)
    return response.status, headers, response.read()


def _refused(connection: http.client.HTTPConnection, result: Any, *named: str) -> None:
    """A JSON 502 naming the problem, CORS as on every answer, nothing of it on the wire, and
    the same connection answers the next activation."""
    status, headers, body = _answer(connection, result)
    assert status == 502, (result, status, headers, body)
    assert headers["content-type"] == ["application/json"], result
    error = json.loads(body)["error"]
    assert all(word in error for word in named), (result, error)
    assert INJECTED not in headers and headers["access-control-allow-origin"] == ["*"], (result, headers)
    assert _answer(connection, {"body": "next"})[::2] == (200, b"next"), result


def test_invalid_status_codes_are_a_json_502(start_proxy) -> None:
    """statusCode is an integer, or a string of digits (as OpenWhisk's web actions take it), of
    a final status 200-599; anything else (1xx is not a final answer, 1000 is not HTTP) is the
    action's fault and answered as such, never written as a status line."""
    proxy = dedicated(start_proxy, RETURNS, runtime="python")
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    for code in (1000, 2, -1, 0, 100, 199, 600, "abc", "", "20x", "1000", "-1", " 200", "٢٠٠",
                 True, False, 200.5, 404.0, [200], {"code": 200}):
        _refused(connection, {"statusCode": code, "body": "x"}, "statusCode",
                 json.dumps(code, ensure_ascii=False, separators=(",", ":")))


def test_invalid_headers_are_a_json_502_and_never_reach_the_wire(start_proxy) -> None:
    """headers is an object of names (HTTP tokens) to strings, numbers, booleans or lists of
    them; a CR, LF or other control character in a name or value would split the response."""
    proxy = dedicated(start_proxy, RETURNS, runtime="python")
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    for headers, named in (
            (["X-A", "b"], "headers"), (5, "headers"), ("X-A: b", "headers"), (True, "headers"),
            ({"X-A": {"b": 1}}, "X-A"), ({"X-A": None}, "X-A"), ({"X-A": [{"b": 1}]}, "X-A"),
            ({"X-A": [["b"]]}, "X-A"), ({"X A": "v"}, "X A"), ({"": "v"}, "header name"),
            ({"X:A": "v"}, "X:A"), ({"Xé": "v"}, "Xé"), ({"X-A\r\nX-Injected": "1"}, "header name"),
            ({"X-A": "a\r\nX-Injected: 1"}, "X-A"), ({"X-A": "a\nX-Injected: 1"}, "X-A"),
            ({"X-A": "a\rb"}, "X-A"), ({"X-A": "a\x00b"}, "X-A"), ({"X-A": "a\x7fb"}, "X-A"),
            ({"Content-Type": "text/html\r\nX-Injected: 1"}, "Content-Type"),
            ({"Set-Cookie": ["a=1", "b=2\r\nX-Injected: 1"]}, "Set-Cookie")):
        _refused(connection, {"headers": headers, "body": "x"}, named)


def test_framing_and_hop_by_hop_headers_of_the_action_are_dropped(start_proxy) -> None:
    """The proxy frames its own answers: an action's Content-Length, Transfer-Encoding or
    connection headers (any case) are dropped, so the next answer on the connection is intact."""
    proxy = dedicated(start_proxy, RETURNS, runtime="python")
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    for name, value in (("Content-Length", "1"), ("content-LENGTH", "999"), ("Transfer-Encoding", "chunked"),
                        ("TRANSFER-ENCODING", "gzip"), ("Connection", "close"), ("Keep-Alive", "timeout=1"),
                        ("Proxy-Connection", "keep-alive"), ("TE", "trailers"), ("Trailer", "X-Sum"),
                        ("upgrade", "websocket")):
        status, headers, body = _answer(connection, {"headers": {name: value, "X-Kept": "yes"}, "body": "hello"})
        assert (status, body, headers["x-kept"]) == (200, b"hello", ["yes"]), name
        assert headers["content-length"] == ["5"] and "transfer-encoding" not in headers, (name, headers)
        if name.lower() != "content-length":
            assert name.lower() not in headers, (name, headers)
    assert _answer(connection, {"body": "last"})[::2] == (200, b"last")


def test_status_and_header_forms_web_actions_accept(start_proxy) -> None:
    """What OpenWhisk's web actions accept: a numeric string status, number and boolean header
    values (as JSON writes them), and a list for a header sent several times (Set-Cookie)."""
    proxy = dedicated(start_proxy, RETURNS, runtime="python")
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    assert _answer(connection, {"statusCode": "404", "body": "gone"})[::2] == (404, b"gone")
    assert _answer(connection, {"statusCode": 599, "body": "x"})[0] == 599
    assert _answer(connection, {"statusCode": None, "headers": None, "body": "x"})[::2] == (200, b"x")
    status, headers, _ = _answer(connection, {"headers": {"X-N": 5, "X-F": 1.5, "X-B": True,
                                                          "Set-Cookie": ["a=1", "b=2"]}, "body": "x"})
    assert status == 200
    assert (headers["x-n"], headers["x-f"], headers["x-b"]) == (["5"], ["1.5"], ["true"])
    assert headers["set-cookie"] == ["a=1", "b=2"]


def test_init_fields_of_the_wrong_type_are_a_json_400(start_proxy) -> None:
    """A stem cell's init names the field of the wrong type (binary in NODE's words); the
    container still takes a good init after them."""
    proxy = start_proxy("python", env=KNATIVE)
    code = "def main(a):\n    return {'n': a.get('n')}\n"
    for init, field in (({"code": 123}, "code"), ({"code": 123, "binary": True}, "code"),
                        ({"code": {"a": 1}}, "code"), ({"code": code, "binary": 1}, "binary"),
                        ({"code": code, "binary": "true"}, "binary"), ({"code": code, "main": 5}, "main"),
                        ({"code": code, "main": ["main"]}, "main"), ({"code": code, "env": [1]}, "env"),
                        ({"code": code, "env": "A=1"}, "env")):
        for message in ({"init": init}, {"init": init, "activation": {}, "value": {"n": 1}}):
            status, headers, body = call(proxy, message)
            assert status == 400 and headers["Content-Type"] == "application/json", (message, status, body)
            assert f"'{field}'" in json.loads(body)["error"], (message, body)
    status, _, body = call(proxy, {"init": {"code": code, "binary": False, "env": None}, "activation": {},
                                   "value": {"n": 2}})
    assert (status, json.loads(body)) == (200, {"n": 2})


# ---------------------------------------------------------------- dedicated images

def test_autoinit_from_a_file_and_a_folder(start_proxy, tmp_path: Path) -> None:
    """OW_AUTOINIT names a file or a folder in the image; OW_AUTOINIT_MAIN the entry point."""
    source = tmp_path / "fn.py"
    source.write_text("def handle(a):\n    return {'from': 'file'}\n")
    proxy = start_proxy("python", env={**KNATIVE, "OW_AUTOINIT": str(source), "OW_AUTOINIT_MAIN": "handle"})
    assert json.loads(call(proxy, {})[2]) == {"from": "file"}
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "__main__.py").write_text("from helper import word\ndef main(a):\n    return {'from': word()}\n")
    (folder / "helper.py").write_text("def word():\n    return 'folder'\n")
    proxy = start_proxy("python", env={**KNATIVE, "OW_AUTOINIT": str(folder)})
    assert json.loads(call(proxy, {})[2]) == {"from": "folder"}


def test_failed_autoinit_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    """A baked-in action that does not load ends the process (the revision never gets ready)."""
    broken = tmp_path / "broken.py"
    broken.write_text("def main(a) this is not python\n")
    env = {**os.environ, **KNATIVE, "OW_AUTOINIT": str(broken), "ACTIONPROXY_HOST": "127.0.0.1",
           "ACTIONPROXY_ACTION_DIR": str(tmp_path / "actions")}
    done = subprocess.run([sys.executable, "-m", "actionproxy", "serve", "--runtime", "python",
                           "--port", str(free_port())], env=env, capture_output=True, timeout=60)
    assert done.returncode != 0
    assert f"cannot load the action from {broken}" in done.stderr.decode()
    assert "SyntaxError" in done.stderr.decode()


def test_unknown_platform_is_refused(start_proxy) -> None:
    """__OW_RUNTIME_PLATFORM must be openwhisk or knative."""
    with pytest.raises(RuntimeError, match="not supported"):
        start_proxy("python", env={"__OW_RUNTIME_PLATFORM": "lambda"})


# ---------------------------------------------------------------- parameter binding

def test_parameter_precedence(start_proxy, tmp_path: Path) -> None:
    """Bound defaults merge under the request: params file < ACTIONPROXY_PARAM_* < query < body."""
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"a": "file", "b": "file", "c": "file", "d": "file", "n": 1}))
    proxy = dedicated(start_proxy, "def main(a):\n    return {k: a[k] for k in 'abcdn'}\n", runtime="python",
                      env={"ACTIONPROXY_PARAMS_FILE": str(params), "ACTIONPROXY_PARAM_b": "env",
                           "ACTIONPROXY_PARAM_c": "env", "ACTIONPROXY_PARAM_n": "42"})
    status, _, body = call(proxy, {"value": {"d": "body"}}, path="/?c=query")
    assert (status, json.loads(body)) == (200, {"a": "file", "b": "env", "c": "query", "d": "body", "n": 42})


# ---------------------------------------------------------------- a dedicated image, for real

def test_dedicated_image_answers_its_first_post(tmp_path: Path) -> None:
    """An image FROM actionproxy/python with COPY + ENV OW_AUTOINIT answers its very first
    POST / with the function's result (the function was loaded before the port answered)."""
    require_docker("python")
    (tmp_path / "hello.py").write_text("def main(args):\n    return {'greeting': 'Hello, ' + args['name']}\n")
    (tmp_path / "Dockerfile").write_text(
        f"FROM {image('python')}\n"
        "COPY hello.py /action/hello.py\n"
        "ENV __OW_RUNTIME_PLATFORM=knative OW_AUTOINIT=/action/hello.py\n")
    tag = "actionproxy-test/knative-dedicated:latest"
    docker("build", "-q", "-t", tag, str(tmp_path), timeout=300)
    container = docker("run", "-d", "-p", "127.0.0.1::8080", tag).stdout.strip()
    try:
        port = int(docker("port", container, "8080/tcp").stdout.split(":")[-1])
        body = json.dumps({"name": "Ada"}).encode()
        for _ in range(1500):  # until the port answers at all; the first answer must be the result
            request = urllib.request.Request(f"http://127.0.0.1:{port}/", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status, answer = response.status, json.loads(response.read())
                break
            except (urllib.error.URLError, ConnectionError) as err:
                assert not isinstance(err, urllib.error.HTTPError), f"first answer was an error: {err}"
                time.sleep(0.02)
        else:
            raise AssertionError("the container never answered")
        assert (status, answer) == (200, {"greeting": "Hello, Ada"})
    finally:
        docker("rm", "-f", "-v", container, check=False)


def test_deadlines_read_as_in_openwhisk_mode(start_proxy) -> None:
    """One reading of `deadline` for both platforms: a value that is not epoch ms is a 400 (it
    was silently ignored here), one that passed since the proxy started is enforced at once,
    one from before the start (a test suite's "123") is ignored."""
    proxy = dedicated(start_proxy, "def main(a):\n    return {'ok': True}\n", runtime="python")
    for bad in ("soon", "NaN", [1], {"ms": 1}):
        status, _, body = call(proxy, {"activation": {"deadline": bad}, "value": {}})
        assert status == 400 and "deadline" in json.loads(body)["error"], (bad, status, body)
    status, _, body = call(proxy, {"activation": {"deadline": str(int(time.time() * 1000) - 1)}, "value": {}})
    assert status == 502 and "deadline" in json.loads(body)["error"], body
    assert call(proxy, {"activation": {"deadline": "123"}, "value": {}})[0] == 200
