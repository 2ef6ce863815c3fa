"""ES modules for Node.js: source with `export`/`import`, `export default`, and packages with
"type": "module" or a .mjs entry all load through /init; a syntax error names its line.

Real proxies and the real launcher on the machine's Node.js (20 here: no TypeScript; see the
README for what runs where).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Proxy, zip_b64

NAMED = ("import { createHash } from 'node:crypto';\n"
         "import path from 'node:path';\n"
         "export function main(args) {\n"
         "  return {hash: createHash('sha1').update(args.s).digest('hex').slice(0, 8),\n"
         "          file: path.basename(new URL(import.meta.url).pathname)};\n"
         "}\n")
DEFAULT = "export default async function (args) { return {default: true, name: args.name}; }\n"
DEFAULT_OBJECT = "export default { main: (args) => ({object: true, n: args.n}) };\n"
OTHER_NAME = "export const handler = (args) => ({handler: args.n});\n"
ENV = ("const sleep = (ms) => new Promise((done) => setTimeout(done, ms));\n"
       "export async function main(args) {\n"
       "  await sleep(50);\n"
       "  return {id: process.env.__OW_ACTIVATION_ID, i: args.i};\n"
       "}\n")


@pytest.fixture
def node(start_proxy) -> Proxy:
    return start_proxy("nodejs")


@pytest.mark.parametrize(("code", "main", "value", "expected"), [
    (NAMED, "main", {"s": "abc"}, {"hash": "a9993e36", "file": "index.mjs"}),
    (DEFAULT, "main", {"name": "Ada"}, {"default": True, "name": "Ada"}),
    (DEFAULT_OBJECT, "main", {"n": 2}, {"object": True, "n": 2}),
    (OTHER_NAME, "handler", {"n": 3}, {"handler": 3}),
], ids=["named-export-with-imports", "export-default-function", "export-default-object", "another-name"])
def test_source_that_is_an_es_module(node: Proxy, code: str, main: str, value: dict, expected: dict) -> None:
    assert node.init(code, main=main) == (200, {"ok": True})
    assert node.run(value) == (200, expected)


def test_a_missing_export_is_not_a_function(node: Proxy) -> None:
    status, body = node.init(OTHER_NAME)
    assert status == 502


@pytest.mark.parametrize(("files", "main"), [
    ({"package.json": '{"name": "p", "type": "module", "main": "lib.js"}',
      "lib.js": "import { helper } from './helper.js';\nexport const main = (a) => ({pkg: helper(a.a)});\n",
      "helper.js": "export const helper = (x) => 'esm-' + x;\n"}, "main"),
    ({"package.json": '{"name": "p", "main": "lib.mjs"}',
      "lib.mjs": "export function main(a) { return {pkg: 'esm-' + a.a}; }\n"}, "main"),
], ids=["type-module", "mjs-entry"])
def test_a_package_that_is_an_es_module(node: Proxy, files: dict, main: str) -> None:
    assert node.init(zip_b64(files), main=main, binary=True) == (200, {"ok": True})
    assert node.run({"a": 1}) == (200, {"pkg": "esm-1"})


def test_a_syntax_error_in_a_module_names_its_line(node: Proxy) -> None:
    code = "import fs from 'node:fs';\nexport function main(args) {\n  return {a: };\n}\n"
    status, _ = node.init(code)
    assert status == 502
    _, err = node.streams(settle=0.3)
    # node --check names index.mjs:3; with esbuild beside the proxy, its TypeScript try names index.js:3:<col>
    assert re.search(r"index\.m?js:3", err) and "SyntaxError" in err, err


def test_module_activations_keep_their_own_environment(node: Proxy) -> None:
    assert node.init(ENV) == (200, {"ok": True})
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda i: node.run({"i": i}, activation_id=f"act-{i}"), range(20)))
    assert answers == [(200, {"id": f"act-{i}", "i": i}) for i in range(20)]


def test_knative_dedicated_module(start_proxy) -> None:
    proxy = start_proxy("nodejs", env={"__OW_RUNTIME_PLATFORM": "knative", "__OW_ACTION_CODE": DEFAULT})
    status, body, _ = proxy.post("/", {"name": "K"})
    assert (status, body) == (200, {"default": True, "name": "K"})
