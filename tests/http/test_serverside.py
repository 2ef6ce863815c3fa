"""actionproxy.http.serverside: aiohttp's server modules without its client, and a package that
becomes whole the moment anything asks for what only the whole package has."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from actionproxy.http import serverside
serverside.install()
from aiohttp import web
import aiohttp
assert "aiohttp.client" not in sys.modules, "the client was imported with the server"
assert aiohttp.__version__ and aiohttp.web is web
app = web.Application()  # the server side works on its own
assert aiohttp.ClientSession.__module__ == "aiohttp.client"  # asking for the client completes it
assert "aiohttp.client" in sys.modules and "ClientSession" in aiohttp.__all__
import aiohttp.web as again
assert again is web and sys.modules["aiohttp"] is aiohttp
print("ok")
"""

ALREADY_IMPORTED = """
import sys
import aiohttp
from actionproxy.http import serverside
serverside.install()
assert sys.modules["aiohttp"] is aiohttp
print("ok")
"""


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_server_side_alone_then_whole_on_demand() -> None:
    assert run(PROBE) == "ok\n"


def test_an_imported_aiohttp_is_left_alone() -> None:
    assert run(ALREADY_IMPORTED) == "ok\n"
