"""Request bodies with a Content-Encoding, on every route that reads one (/init, /run, and
Knative's /): decoded when valid; a JSON 4xx naming the coding when not (aiohttp answered a
corrupt gzip body with a plain-text 500, and br or zstd with a plain-text 400); the size
limit applies to the decoded body; and the keep-alive connection stays in step afterwards."""

from __future__ import annotations

import gzip
import http.client
import json
import zlib

from conftest import Proxy

ECHO = "def main(a):\n    return a\n"
RUN = json.dumps({"value": {"k": "v"}}).encode()
KNATIVE = {"__OW_RUNTIME_PLATFORM": "knative", "__OW_ACTION_CODE": ECHO}

# (Content-Encoding, body, status, a word the error must hold)
BAD = (
    ("gzip", b"this is not gzip", 400, "gzip"),
    ("gzip", gzip.compress(RUN)[:-12], 400, "gzip"),  # cut short
    ("gzip", gzip.compress(RUN) + b"junk", 400, "gzip"),
    ("x-gzip", b"junk", 400, "gzip"),
    ("deflate", b"this is not deflate", 400, "deflate"),
    ("deflate", zlib.compress(RUN) + b"junk", 400, "deflate"),
    ("br", b"this is not brotli", 415, "br"),
    ("zstd", b"\x28\xb5\x2f\xfdjunk", 415, "zstd"),
    ("compress", RUN, 415, "compress"),
    ("foo", RUN, 415, "foo"),
    ("gzip, foo", gzip.compress(RUN), 415, "foo"),
)


def send(connection: http.client.HTTPConnection, path: str, body: bytes,
         encoding: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a keep-alive connection, the body sent as given (http.client neither
    encodes nor decodes it)."""
    headers = {"Content-Type": "application/json"}
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    connection.request("POST", path, body, headers)
    response = connection.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def check_refused(connection: http.client.HTTPConnection, path: str, after: bytes) -> None:
    """Every BAD body is a JSON 4xx naming the coding; the same connection answers `after`."""
    for encoding, body, status, word in BAD:
        got, headers, raw = send(connection, path, body, encoding)
        assert (got, headers["content-type"]) == (status, "application/json"), (encoding, got, raw)
        assert word in json.loads(raw)["error"], (encoding, raw)
        assert send(connection, path, after)[0] == 200, encoding


def test_run_bodies_in_bad_codings_are_json_4xx(proxy: Proxy) -> None:
    proxy.init(ECHO)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    check_refused(connection, "/run", RUN)


def test_init_body_in_a_bad_coding_is_a_json_4xx_and_a_good_init_follows(proxy: Proxy) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    init = json.dumps({"value": {"code": ECHO}}).encode()
    for encoding, body, status, word in BAD:
        got, _, raw = send(connection, "/init", body, encoding)
        assert got == status and word in json.loads(raw)["error"], (encoding, got, raw)
    assert send(connection, "/init", gzip.compress(init), "gzip")[0] == 200
    assert send(connection, "/run", RUN)[::2] == (200, b'{"k":"v"}')


def test_knative_bodies_in_bad_codings_are_json_4xx(start_proxy) -> None:
    proxy = start_proxy("python", env=KNATIVE)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    check_refused(connection, "/", RUN)
    status, headers, _ = send(connection, "/", b"junk", "gzip")
    assert (status, headers["access-control-allow-origin"]) == (400, "*")


def test_valid_codings_are_decoded(proxy: Proxy) -> None:
    """gzip (also x-gzip, several members), deflate (zlib-wrapped, or raw as some clients send
    it), identity, any case, and a list of codings undone last first."""
    proxy.init(ECHO)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    raw_deflate = zlib.compressobj(wbits=-15)
    half = len(RUN) // 2
    for encoding, body in (("gzip", gzip.compress(RUN)), ("GZip", gzip.compress(RUN)),
                           ("x-gzip", gzip.compress(RUN)),
                           ("gzip", gzip.compress(RUN[:half]) + gzip.compress(RUN[half:])),
                           ("deflate", zlib.compress(RUN)),
                           ("deflate", raw_deflate.compress(RUN) + raw_deflate.flush()),
                           ("identity", RUN), ("", RUN),
                           ("deflate, gzip", gzip.compress(zlib.compress(RUN))),
                           ("gzip, identity, gzip", gzip.compress(gzip.compress(RUN)))):
        assert send(connection, "/run", body, encoding)[::2] == (200, b'{"k":"v"}'), encoding


def test_decoded_body_over_the_limit_is_a_413(start_proxy) -> None:
    """ACTIONPROXY_MAX_BODY bounds the decoded body: a small gzip bomb is refused, not inflated."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_BODY": "4096"})
    bomb = gzip.compress(json.dumps({"value": {"code": "#" * 1_000_000}}).encode())
    assert len(bomb) < 4096
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=60)
    for path in ("/init", "/run"):
        status, _, raw = send(connection, path, bomb, "gzip")
        assert status == 413 and "4096" in json.loads(raw)["error"], (path, raw)
        if path == "/init":
            assert send(connection, "/init", json.dumps({"value": {"code": ECHO}}).encode())[0] == 200
    assert send(connection, "/run", RUN)[0] == 200
