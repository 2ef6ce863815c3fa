"""W3C trace context: each activation is a span of its caller's trace (or starts one), seen by
the function as TRACEPARENT/TRACESTATE in its own environment, and carried by JSON log lines.

Real proxies and launchers, real HTTP; the concurrency cases hold each activation past an
await or a sleep while others start, so a shared environment would show the wrong trace.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Proxy

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # the W3C spec's example
STATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
SEEN = {
    "python": ("import os, time\n"
               "def main(args):\n"
               "    time.sleep(args.get('sleep', 0))\n"
               "    print('working')\n"
               "    return {'tp': os.environ.get('TRACEPARENT'), 'ts': os.environ.get('TRACESTATE'),\n"
               "            'ow': os.environ.get('__OW_TRACEPARENT'), 'i': args.get('i')}\n"),
    "python-async": ("import asyncio, os\n"
                     "async def main(args):\n"
                     "    await asyncio.sleep(args.get('sleep', 0))\n"
                     "    print('working')\n"
                     "    return {'tp': os.environ.get('TRACEPARENT'), 'ts': os.environ.get('TRACESTATE'),\n"
                     "            'ow': os.environ.get('__OW_TRACEPARENT'), 'i': args.get('i')}\n"),
    "nodejs": ("async function main(args) {\n"
               "  await new Promise((done) => setTimeout(done, (args.sleep || 0) * 1000));\n"
               "  console.log('working');\n"
               "  return {tp: process.env.TRACEPARENT, ts: process.env.TRACESTATE || null,\n"
               "          ow: process.env.__OW_TRACEPARENT, i: args.i};\n"
               "}\n"),
    "blackbox": ("#!/bin/bash\n"
                 "echo working\n"
                 "echo \"{\\\"tp\\\": \\\"$TRACEPARENT\\\", \\\"ow\\\": \\\"$__OW_TRACEPARENT\\\"}\"\n"),
}
KINDS = list(SEEN)


def runtime_of(kind: str) -> str:
    return "python" if kind.startswith("python") else kind


def started(start_proxy, kind: str, env: dict[str, str] | None = None) -> Proxy:
    proxy = start_proxy(runtime_of(kind), env=env)
    assert proxy.init(SEEN[kind]) == (200, {"ok": True})
    return proxy


def parts(traceparent: str) -> tuple[str, str, str]:
    match = TRACEPARENT.fullmatch(traceparent)
    assert match is not None, traceparent
    return match[1], match[2], match[3]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", ["/run", "/run?via=aiohttp"], ids=["plain-server", "aiohttp"])
def test_the_activation_is_a_child_span_of_the_callers_traceparent(start_proxy, kind: str, path: str) -> None:
    proxy = started(start_proxy, kind)
    status, body, _ = proxy.post(path, {"value": {}}, headers={"traceparent": PARENT, "tracestate": STATE})
    assert status == 200, body
    trace_id, span_id, flags = parts(body["tp"])
    assert (trace_id, flags) == ("0af7651916cd43dd8448eb211c80319c", "01")
    assert span_id != "b7ad6b7169203331", "the activation is a new span, the caller's is its parent"
    assert body["ow"] == body["tp"]
    if kind != "blackbox":
        assert body["ts"] == STATE


@pytest.mark.parametrize("kind", KINDS)
def test_without_a_traceparent_each_activation_starts_a_trace(start_proxy, kind: str) -> None:
    proxy = started(start_proxy, kind)
    first, second = proxy.run({})[1], proxy.run({})[1]
    assert parts(first["tp"])[2] == "00"  # not sampled: nothing records it
    assert parts(first["tp"])[0] != parts(second["tp"])[0]


def test_a_traceparent_field_of_the_body_wins_over_the_header(proxy: Proxy) -> None:
    assert proxy.init(SEEN["python"]) == (200, {"ok": True})
    field = "00-1af7651916cd43dd8448eb211c80319c-c7ad6b7169203331-01"
    status, body, _ = proxy.post("/run", {"value": {}, "traceparent": field, "tracestate": "a=b"},
                                 headers={"traceparent": PARENT, "tracestate": STATE})
    assert status == 200 and parts(body["tp"])[0] == "1af7651916cd43dd8448eb211c80319c" and body["ts"] == "a=b"
    assert parts(body["tp"])[1] != "c7ad6b7169203331"


@pytest.mark.parametrize("bad", [
    "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",  # upper case
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
    "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # version 00 has no more
    "garbage",
])
def test_an_invalid_traceparent_starts_a_new_trace_and_drops_tracestate(proxy: Proxy, bad: str) -> None:
    assert proxy.init(SEEN["python"]) == (200, {"ok": True})
    status, body, _ = proxy.post("/run", {"value": {}}, headers={"traceparent": bad, "tracestate": STATE})
    assert status == 200 and parts(body["tp"])[0] != "0af7651916cd43dd8448eb211c80319c" and body["ts"] is None


def test_a_later_version_is_read_by_its_version_00_fields(proxy: Proxy) -> None:
    assert proxy.init(SEEN["python"]) == (200, {"ok": True})
    status, body, _ = proxy.post("/run", {"value": {}}, headers={"traceparent": PARENT.replace("00-", "cc-", 1) + "-what"})
    assert status == 200 and parts(body["tp"])[0] == "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize("kind", ["python", "python-async", "nodejs"])
def test_concurrent_activations_each_see_their_own_trace(start_proxy, kind: str) -> None:
    proxy = started(start_proxy, kind)
    traces = [f"00-{i:032x}-{i + 1:016x}-01" for i in range(1, 41)]

    def one(i: int) -> dict:
        status, body, _ = proxy.post("/run", {"value": {"i": i, "sleep": 0.3}}, headers={"traceparent": traces[i]})
        assert status == 200, body
        return body

    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(one, range(40)))
    for i, body in enumerate(answers):
        assert body["i"] == i and parts(body["tp"])[0] == f"{i + 1:032x}", (i, body)


@pytest.mark.parametrize("kind", ["python", "nodejs", "blackbox"])
def test_json_log_lines_carry_the_activations_trace_and_span(start_proxy, kind: str) -> None:
    proxy = started(start_proxy, kind, env={"ACTIONPROXY_LOG_FORMAT": "json"})
    status, body, _ = proxy.post("/run", {"value": {}, "activation_id": "a1"}, headers={"traceparent": PARENT})
    assert status == 200
    trace_id, span_id, _ = parts(body["tp"])
    out, _ = proxy.streams(settle=0.3)
    lines = [json.loads(line) for line in out.splitlines() if '"a1"' in line]
    assert lines and all((line["traceId"], line["spanId"]) == (trace_id, span_id) for line in lines), out
    assert any(line["message"] == "working" for line in lines)


KNATIVE = {"__OW_RUNTIME_PLATFORM": "knative", "__OW_ACTION_CODE": SEEN["python"]}


def test_knative_takes_the_traceparent_header(start_proxy) -> None:
    proxy = start_proxy("python", env=KNATIVE)
    status, body, _ = proxy.post("/", {"a": 1}, headers={"traceparent": PARENT, "tracestate": STATE})
    assert status == 200 and parts(body["tp"])[0] == "0af7651916cd43dd8448eb211c80319c" and body["ts"] == STATE


def test_a_cloudevent_s_traceparent_extension_is_used_without_a_header(start_proxy) -> None:
    """The CloudEvents distributed-tracing extension: `ce-traceparent` in binary mode."""
    proxy = start_proxy("python", env=KNATIVE)
    event = {"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-traceparent": PARENT}
    status, body, _ = proxy.post("/", {"a": 1}, headers=event)
    assert status == 200 and parts(body["tp"])[0] == "0af7651916cd43dd8448eb211c80319c"
