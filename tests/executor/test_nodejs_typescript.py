"""TypeScript for Node.js: source with types, interfaces, enums, and import/export runs through
/init, transpiled by esbuild (installed beside the proxy by `make dev`, as in the image); a
syntax error names its line and column. Plain JavaScript never reaches the transpiler.

Real proxies and the real launcher on the machine's Node.js.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Proxy

COMMONJS_STYLE = ("enum Color { Red = 'red' }\n"
                  "interface Args { n: number; name?: string }\n"
                  "function main(args: Args): { color: Color; n: number; who: string } {\n"
                  "  const who: string = args.name ?? 'world';\n"
                  "  return { color: Color.Red, n: args.n * 2, who };\n"
                  "}\n")
MODULE_STYLE = ("import { createHash } from 'node:crypto';\n"
                "type Reply = { hash: string; id: string | undefined };\n"
                "export async function main(args: { s: string }): Promise<Reply> {\n"
                "  await new Promise<void>((done) => setTimeout(done, 20));\n"
                "  return { hash: createHash('sha1').update(args.s).digest('hex').slice(0, 8),\n"
                "           id: process.env.__OW_ACTIVATION_ID };\n"
                "}\n")
BROKEN = ("interface Args { n: number }\n"
          "export function main(args: Args) {\n"
          "  return { n: args.n + };\n"
          "}\n")


@pytest.fixture
def node(start_proxy) -> Proxy:
    return start_proxy("nodejs")


def test_typescript_without_modules(node: Proxy) -> None:
    assert node.init(COMMONJS_STYLE) == (200, {"ok": True})
    assert node.run({"n": 21, "name": "TS"}) == (200, {"color": "red", "n": 42, "who": "TS"})


def test_typescript_module_with_imports_under_concurrency(node: Proxy) -> None:
    assert node.init(MODULE_STYLE) == (200, {"ok": True})
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: node.run({"s": "abc"}, activation_id=f"ts-{i}"), range(16)))
    assert answers == [(200, {"hash": "a9993e36", "id": f"ts-{i}"}) for i in range(16)]


def test_a_typescript_syntax_error_names_its_line(node: Proxy) -> None:
    assert node.init(BROKEN)[0] == 502
    _, err = node.streams(settle=0.3)
    assert "index.js:3:24: SyntaxError" in err and "return { n: args.n + };" in err, err


def test_without_esbuild_typescript_is_a_plain_syntax_error(start_proxy, tmp_path) -> None:
    proxy = start_proxy("nodejs", env={"ACTIONPROXY_NODE_MODULES": str(tmp_path / "none")})
    assert proxy.init(COMMONJS_STYLE)[0] == 502
    _, err = proxy.streams(settle=0.3)
    assert "SyntaxError" in err, err
