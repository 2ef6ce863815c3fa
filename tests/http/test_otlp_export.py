"""OTLP/HTTP export of one span per activation, to a real local receiver (an HTTP server in
this process that keeps what collectors get: POST /v1/traces, OTLP's JSON encoding)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from conftest import Proxy, wait_until

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FUNCTION = ("import os\n"
            "def main(args):\n"
            "    if args.get('fail'):\n"
            "        raise ValueError('no')\n"
            "    return {'tp': os.environ['TRACEPARENT']}\n")


class Receiver:
    def __init__(self) -> None:
        self.posts: list[tuple[str, Any, dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((self.path, self.headers, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def spans(self) -> list[dict]:
        return [span for _, _, body in self.posts for resource in body["resourceSpans"]
                for scope in resource["scopeSpans"] for span in scope["spans"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()


@pytest.fixture
def traced(start_proxy, receiver: Receiver) -> Proxy:
    proxy = start_proxy("python", env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "orders",
                                       "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=s3cr%20t,tenant=a"})
    assert proxy.init(FUNCTION) == (200, {"ok": True})
    return proxy


def test_each_activation_is_exported_as_a_span_of_its_trace(traced: Proxy, receiver: Receiver) -> None:
    status, body, _ = traced.post("/run", {"value": {}, "activation_id": "a1"}, headers={"traceparent": PARENT})
    assert status == 200
    _, span_id, _ = body["tp"].split("-")[1:]
    wait_until(lambda: receiver.spans(), "a span at the receiver", cap=30)
    [span] = receiver.spans()
    assert (span["traceId"], span["spanId"], span["parentSpanId"]) == (
        "0af7651916cd43dd8448eb211c80319c", span_id, "b7ad6b7169203331")
    assert span["kind"] == 2 and span["status"] == {"code": 1}
    assert int(span["endTimeUnixNano"]) > int(span["startTimeUnixNano"])
    assert {"key": "faas.invocation_id", "value": {"stringValue": "a1"}} in span["attributes"]
    path, headers, body = receiver.posts[0]
    assert path == "/v1/traces" and headers["x-api-key"] == "s3cr t" and headers["tenant"] == "a"
    assert {"key": "service.name", "value": {"stringValue": "orders"}} in body["resourceSpans"][0]["resource"]["attributes"]


def test_new_traces_are_sampled_and_errors_marked_unsampled_parents_not_exported(traced: Proxy,
                                                                                  receiver: Receiver) -> None:
    status, body, _ = traced.post("/run", {"value": {}})
    assert status == 200 and body["tp"].endswith("-01"), "a trace the proxy starts is sampled when exported"
    assert traced.post("/run", {"value": {"fail": True}})[0] == 200
    unsampled = PARENT[:-2] + "00"
    assert traced.post("/run", {"value": {}}, headers={"traceparent": unsampled})[0] == 200
    wait_until(lambda: len(receiver.spans()) >= 2, "two spans", cap=30)
    traced.stop()  # the exporter flushes at shutdown: what it had is out
    spans = receiver.spans()
    assert len(spans) == 2 and [span["status"]["code"] for span in spans] == [1, 2]
    assert all(span["traceId"] != "0af7651916cd43dd8448eb211c80319c" for span in spans)


def test_a_collector_that_is_down_costs_no_activation(start_proxy) -> None:
    proxy = start_proxy("python", env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert proxy.init(FUNCTION) == (200, {"ok": True})
    for _ in range(20):
        assert proxy.run({})[0] == 200
