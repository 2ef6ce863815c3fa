"""Streamed results: a function that yields answers chunk by chunk in Knative mode (NDJSON, or
SSE when accepted), and with its chunks joined, {"chunks": [...]}, in OpenWhisk mode.

Real proxies and launchers over real HTTP. That the first chunk leaves before the function
ends is shown without a clock: the function yields, then waits for a file that the test
creates only after it has read that chunk.
"""

from __future__ import annotations

import http.client
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import Proxy, wait_until

# each yields {"i": 0..n-1}; after the first it waits (30 s at most) for args["gate"] to exist;
# args["fail"] raises after the chunks, args["forever"] yields every 50 ms until stopped
FUNCTIONS = {
    "python": ("import os, time\n"
               "def main(args):\n"
               "    for i in range(args.get('n', 3)):\n"
               "        print('chunk', i)\n"
               "        yield {'i': i}\n"
               "        start = time.time()\n"
               "        while i == 0 and args.get('gate') and not os.path.exists(args['gate']) and time.time() - start < 30:\n"
               "            time.sleep(0.01)\n"
               "    while args.get('forever'):\n"
               "        open(args['forever'], 'a').write('x')\n"
               "        yield {'more': True}\n"
               "        time.sleep(0.05)\n"
               "    if args.get('fail'):\n"
               "        raise ValueError('broke after the chunks')\n"),
    "python-async": ("import asyncio, os, time\n"
                     "async def main(args):\n"
                     "    for i in range(args.get('n', 3)):\n"
                     "        print('chunk', i)\n"
                     "        yield {'i': i}\n"
                     "        start = time.time()\n"
                     "        while i == 0 and args.get('gate') and not os.path.exists(args['gate']) and time.time() - start < 30:\n"
                     "            await asyncio.sleep(0.01)\n"
                     "    while args.get('forever'):\n"
                     "        open(args['forever'], 'a').write('x')\n"
                     "        yield {'more': True}\n"
                     "        await asyncio.sleep(0.05)\n"
                     "    if args.get('fail'):\n"
                     "        raise ValueError('broke after the chunks')\n"),
    "nodejs": ("const fs = require('fs');\n"
               "const sleep = (ms) => new Promise((done) => setTimeout(done, ms));\n"
               "async function* main(args) {\n"
               "  const n = args.n === undefined ? 3 : args.n;\n"
               "  for (let i = 0; i < n; i++) {\n"
               "    console.log('chunk', i);\n"
               "    yield {i};\n"
               "    const start = Date.now();\n"
               "    while (i === 0 && args.gate && !fs.existsSync(args.gate) && Date.now() - start < 30000) await sleep(10);\n"
               "  }\n"
               "  while (args.forever) { fs.appendFileSync(args.forever, 'x'); yield {more: true}; await sleep(50); }\n"
               "  if (args.fail) throw new Error('broke after the chunks');\n"
               "}\n"),
}
KINDS = list(FUNCTIONS)


def knative(start_proxy, kind: str, env: dict[str, str] | None = None) -> Proxy:
    return start_proxy("nodejs" if kind == "nodejs" else "python",
                       env={"__OW_RUNTIME_PLATFORM": "knative", "__OW_ACTION_CODE": FUNCTIONS[kind], **(env or {})})


def open_stream(proxy: Proxy, params: dict, accept: str = "application/json",
                activation: dict | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    body = {"value": params, "activation": activation} if activation else params
    connection.request("POST", "/", json.dumps(body), {"Content-Type": "application/json", "Accept": accept})
    return connection, connection.getresponse()


@pytest.mark.parametrize("kind", KINDS)
def test_chunks_stream_as_ndjson_and_the_first_leaves_before_the_function_ends(start_proxy, tmp_path: Path,
                                                                               kind: str) -> None:
    proxy = knative(start_proxy, kind)
    gate = tmp_path / "gate"
    _, response = open_stream(proxy, {"n": 3, "gate": str(gate)})
    assert response.status == 200 and response.getheader("Content-Type") == "application/x-ndjson"
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert json.loads(response.readline()) == {"i": 0}, "the first chunk, while the function still waits"
    gate.touch()
    assert [json.loads(line) for line in response.read().splitlines()] == [{"i": 1}, {"i": 2}]


@pytest.mark.parametrize("kind", KINDS)
def test_server_sent_events_when_the_client_accepts_them(start_proxy, kind: str) -> None:
    proxy = knative(start_proxy, kind)
    _, response = open_stream(proxy, {"n": 2}, accept="text/event-stream")
    assert response.getheader("Content-Type") == "text/event-stream"
    assert response.read() == b'data: {"i":0}\n\ndata: {"i":1}\n\n'


@pytest.mark.parametrize("kind", KINDS)
def test_an_error_after_some_chunks_ends_the_stream_with_it(start_proxy, kind: str) -> None:
    proxy = knative(start_proxy, kind)
    _, response = open_stream(proxy, {"n": 1, "fail": True})
    lines = [json.loads(line) for line in response.read().splitlines()]
    assert lines[0] == {"i": 0} and "broke after the chunks" in json.dumps(lines[-1]["error"]), lines
    _, response = open_stream(proxy, {"n": 1, "fail": True}, accept="text/event-stream")
    events = response.read().decode()
    assert events.startswith('data: {"i":0}\n\nevent: error\ndata: {"error":') and "broke after" in events


@pytest.mark.parametrize("kind", ["python", "python-async"])
def test_a_deadline_during_a_stream_ends_it_with_the_deadline_error(start_proxy, tmp_path: Path, kind: str) -> None:
    proxy = knative(start_proxy, kind)
    deadline = str(int(time.time() * 1000) + 1500)
    _, response = open_stream(proxy, {"n": 1, "forever": str(tmp_path / "ticks")}, activation={"deadline": deadline})
    lines = [json.loads(line) for line in response.read().splitlines()]
    assert lines[0] == {"i": 0} and lines[1] == {"more": True}
    assert "did not finish by its deadline" in lines[-1]["error"]
    assert open_stream(proxy, {"n": 1})[1].read() == b'{"i":0}\n'  # the runtime serves on


@pytest.mark.parametrize("kind", KINDS)
def test_a_client_that_leaves_stops_the_function(start_proxy, tmp_path: Path, kind: str) -> None:
    proxy = knative(start_proxy, kind)
    ticks = tmp_path / "ticks"
    connection, response = open_stream(proxy, {"n": 1, "forever": str(ticks)})
    assert json.loads(response.readline()) == {"i": 0}
    response.close()
    connection.close()

    def left() -> bool:
        with proxy_get(proxy, "/metrics") as metrics:
            return 'actionproxy_activations_total{outcome="client_left"} 1' in metrics.read().decode()

    wait_until(left, "the activation counted as client_left", cap=30)
    time.sleep(0.2)  # Node.js stops a generator at its next yield: one tick may still be written
    size = ticks.stat().st_size
    time.sleep(0.5)  # not a timing assertion: a function still running would write 10 more ticks meanwhile
    assert ticks.stat().st_size == size, "the function was stopped"
    assert open_stream(proxy, {"n": 2})[1].read() == b'{"i":0}\n{"i":1}\n'


def proxy_get(proxy: Proxy, path: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    connection.request("GET", path)
    return connection.getresponse()


@pytest.mark.parametrize("kind", ["python", "python-async", "nodejs"])
def test_concurrent_streams_each_get_their_own_chunks(start_proxy, kind: str) -> None:
    proxy = knative(start_proxy, kind)

    def one(n: int) -> list:
        _, response = open_stream(proxy, {"n": n})
        return [json.loads(line) for line in response.read().splitlines()]

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(one, range(1, 13)))
    assert answers == [[{"i": i} for i in range(n)] for n in range(1, 13)]


@pytest.mark.parametrize("kind", KINDS)
def test_openwhisk_mode_joins_the_chunks_into_one_result(start_proxy, kind: str) -> None:
    proxy = start_proxy("nodejs" if kind == "nodejs" else "python")
    assert proxy.init(FUNCTIONS[kind]) == (200, {"ok": True})
    assert proxy.run({"n": 3}) == (200, {"chunks": [{"i": 0}, {"i": 1}, {"i": 2}]})
    assert proxy.run({"n": 0}) == (200, {}), "no chunk: the stream's end alone, as for a function that returns {}"
    status, body = proxy.run({"n": 1, "fail": True})
    assert status == 200 and "broke after the chunks" in json.dumps(body["error"])
    out, _ = proxy.check_streams(sentinels=3)
    assert "chunk 0" in out


def test_a_generator_that_yields_nothing_answers_an_empty_stream(start_proxy) -> None:
    proxy = knative(start_proxy, "python")
    status, body, raw = proxy.post("/", {"n": 0})
    assert (status, body) == (200, {})
