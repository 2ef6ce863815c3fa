"""CloudEvents 1.0 in Knative mode: binary and structured events in, a binary-mode event out.

Real proxies in Knative mode with a dedicated Python function, real HTTP. The first request
of each content mode is the HTTP binding's own example (CloudEvents spec, http-protocol-binding
section 3.1.4 and 3.2.4).
"""

from __future__ import annotations

import base64
import http.client
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import Proxy

# echoes its parameters (those of the HTTP context left out) as data, and sets reply attributes
REPLY = '''
def main(args):
    got = {k: v for k, v in args.items() if not k.startswith("__ow_")}
    reply = {"got": got}
    for key in ("__ce_type", "__ce_subject", "__ce_source", "__ce_bad-name", "__ce_specversion"):
        if ("set" + key) in args:
            reply[key] = args["set" + key]
    return args.get("answer", reply)
'''
SERVICE = {"__OW_RUNTIME_PLATFORM": "knative", "K_SERVICE": "orders", "__OW_ACTION_CODE": REPLY}


@pytest.fixture
def knative(start_proxy) -> Proxy:
    return start_proxy("python", env=SERVICE)


def post(proxy: Proxy, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    connection.request("POST", "/", body, headers)
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def binary(event_id: str = "1234-1234-1234", **extra: str) -> dict[str, str]:
    return {"ce-specversion": "1.0", "ce-type": "com.example.someevent", "ce-time": "2018-04-05T03:56:24Z",
            "ce-id": event_id, "ce-source": "/mycontext/subcontext", "Content-Type": "application/json; charset=utf-8",
            **extra}


def ce_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.startswith("ce-")}


def test_the_binding_s_binary_mode_example_gets_a_binary_mode_reply(knative: Proxy) -> None:
    status, headers, body = post(knative, b'{"order": 7, "items": ["a"]}', binary(**{"ce-myext": "x"}))
    assert status == 200, body
    got = json.loads(body)["got"]
    assert got == {"order": 7, "items": ["a"], "__ce_specversion": "1.0", "__ce_type": "com.example.someevent",
                   "__ce_time": "2018-04-05T03:56:24Z", "__ce_id": "1234-1234-1234",
                   "__ce_source": "/mycontext/subcontext", "__ce_myext": "x",
                   "__ce_datacontenttype": "application/json; charset=utf-8"}
    reply = ce_headers(headers)
    assert reply.keys() == {"ce-specversion", "ce-id", "ce-source", "ce-type"}
    assert reply["ce-specversion"] == "1.0" and reply["ce-source"] == "orders"
    assert reply["ce-type"] == "dev.actionproxy.response"
    assert len(reply["ce-id"]) == 32 and reply["ce-id"] != "1234-1234-1234"
    assert headers["content-type"] == "application/json"


def test_the_binding_s_structured_mode_example(knative: Proxy) -> None:
    event = {"specversion": "1.0", "type": "com.example.someevent", "time": "2018-04-05T03:56:24Z",
             "id": "1234-1234-1234", "source": "/mycontext/subcontext", "datacontenttype": "application/json",
             "data": {"order": 8}, "comexampleextension1": "value"}
    status, headers, body = post(knative, json.dumps(event).encode(),
                                 {"Content-Type": "application/cloudevents+json; charset=utf-8"})
    assert status == 200, body
    got = json.loads(body)["got"]
    assert got == {"order": 8, "__ce_specversion": "1.0", "__ce_type": "com.example.someevent",
                   "__ce_time": "2018-04-05T03:56:24Z", "__ce_id": "1234-1234-1234",
                   "__ce_source": "/mycontext/subcontext", "__ce_datacontenttype": "application/json",
                   "__ce_comexampleextension1": "value"}
    assert headers["ce-specversion"] == "1.0" and headers["ce-source"] == "orders"


def test_the_function_sets_the_reply_s_type_and_other_attributes(knative: Proxy) -> None:
    data = {"set__ce_type": "com.example.order.accepted", "set__ce_subject": "café 42",
            "set__ce_source": "/orders/eu"}
    status, headers, body = post(knative, json.dumps(data).encode(), binary())
    assert status == 200, body
    assert headers["ce-type"] == "com.example.order.accepted"
    assert headers["ce-source"] == "/orders/eu"
    assert headers["ce-subject"] == "caf%C3%A9%2042"  # percent-encoded, as the HTTP binding says
    assert not any(key.startswith("__ce_type") for key in json.loads(body))


def test_percent_encoded_attributes_are_decoded(knative: Proxy) -> None:
    status, _, body = post(knative, b"{}", binary(**{"ce-subject": "caf%C3%A9%20au%20lait"}))
    assert status == 200 and json.loads(body)["got"]["__ce_subject"] == "café au lait"


@pytest.mark.parametrize(("content_type", "payload", "expected"), [
    ("text/plain", b"hello \xc3\xa9v\xc3\xa9nement", "hello événement"),
    ("application/octet-stream", b"\x00\x01\xff", base64.b64encode(b"\x00\x01\xff").decode()),
    ("application/json", b"[1, 2, 3]", [1, 2, 3]),
], ids=["text", "binary", "json-array"])
def test_data_that_is_not_a_json_object_is_ce_data(knative: Proxy, content_type: str, payload: bytes,
                                                      expected: object) -> None:
    status, _, body = post(knative, payload, {**binary(), "Content-Type": content_type})
    got = json.loads(body)["got"]
    assert status == 200 and got["__ce_data"] == expected and got["__ce_datacontenttype"] == content_type


def test_structured_data_base64_is_passed_as_base64(knative: Proxy) -> None:
    event = {"specversion": "1.0", "type": "t", "id": "1", "source": "/s", "datacontenttype": "image/png",
             "data_base64": base64.b64encode(b"\x89PNG").decode()}
    status, _, body = post(knative, json.dumps(event).encode(), {"Content-Type": "application/cloudevents+json"})
    assert status == 200 and json.loads(body)["got"]["__ce_data"] == base64.b64encode(b"\x89PNG").decode()


@pytest.mark.parametrize(("headers", "body", "message"), [
    ({"ce-specversion": "1.0", "ce-type": "t", "ce-source": "/s", "Content-Type": "application/json"}, b"{}",
     "required attribute(s): id"),
    ({"ce-specversion": "0.3", "ce-type": "t", "ce-source": "/s", "ce-id": "1"}, b"", "Only CloudEvents 1.0"),
    ({"Content-Type": "application/cloudevents+json"}, b"{not json", "not valid JSON"),
    ({"Content-Type": "application/cloudevents+json"}, b'{"specversion": "1.0", "id": "1", "source": "/s"}',
     "required attribute(s): type"),
    ({"Content-Type": "application/cloudevents+json"},
     b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": 1, "data_base64": "AA=="}',
     "not both"),
    ({"Content-Type": "application/cloudevents-batch+json"}, b"[]", "batch mode is not supported"),
    ({**binary(), "Content-Type": "application/json"}, b"{oops", "data is not valid JSON"),
], ids=["no-id", "old-specversion", "structured-not-json", "structured-no-type", "data-and-base64", "batch",
        "bad-json-data"])
def test_a_malformed_event_is_a_400_naming_the_problem(knative: Proxy, headers: dict, body: bytes,
                                                       message: str) -> None:
    status, reply, raw = post(knative, body, headers)
    assert status == 400 and message in json.loads(raw)["error"] and not ce_headers(reply), raw
    assert post(knative, b"{}", binary())[0] == 200  # the proxy serves on


def test_results_that_are_not_events(knative: Proxy) -> None:
    """statusCode keeps the web-action rules, an error stays an error, {} is acknowledged with 202."""
    status, headers, body = post(knative, json.dumps({"answer": {"statusCode": 201, "body": "made"}}).encode(),
                                 binary())
    assert (status, body, ce_headers(headers)) == (201, b"made", {})
    status, headers, body = post(knative, json.dumps({"answer": {"error": "no stock"}}).encode(), binary())
    assert (status, json.loads(body), ce_headers(headers)) == (400, {"error": "no stock"}, {})
    status, headers, body = post(knative, json.dumps({"answer": {}}).encode(), binary())
    assert (status, body, ce_headers(headers)) == (202, b"", {})


def test_a_reply_attribute_that_cannot_be_one_is_a_502(knative: Proxy) -> None:
    status, headers, body = post(knative, json.dumps({"set__ce_bad-name": "x"}).encode(), binary())
    assert status == 502 and "'__ce_bad-name' cannot be a CloudEvents attribute" in json.loads(body)["error"]


def test_a_plain_request_is_not_an_event(knative: Proxy) -> None:
    status, headers, body = post(knative, b'{"a": 1}', {"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["got"] == {"a": 1} and not ce_headers(headers)


def test_concurrent_events_each_get_their_own_attributes(knative: Proxy) -> None:
    def one(i: int) -> tuple[int, dict, dict]:
        status, headers, body = post(knative, json.dumps({"i": i, "set__ce_subject": f"s{i}"}).encode(),
                                     binary(event_id=f"e{i}"))
        return status, headers, json.loads(body)

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(one, range(64)))
    for i, (status, headers, body) in enumerate(answers):
        assert status == 200 and body["got"]["i"] == i and body["got"]["__ce_id"] == f"e{i}"
        assert headers["ce-subject"] == f"s{i}"
    assert len({headers["ce-id"] for _, headers, _ in answers}) == 64
