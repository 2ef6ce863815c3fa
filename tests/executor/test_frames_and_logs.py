"""Unit checks of the two byte formats the proxy owns: v2 frames and log blocks."""

from __future__ import annotations

import json
import os

import pytest

from actionproxy.executor import frames
from actionproxy.logs import SENTINEL, ActivationLogs, LogWriter


def test_frames_survive_any_split() -> None:
    """A frame stream cut at every possible byte boundary decodes to the same frames."""
    stream = (frames.encode(frames.RUN, 7, b'{"value":{}}')
              + frames.encode(frames.STDOUT, 7, b"x" * 70000)
              + frames.encode(frames.DONE, 7, b"{}"))
    for cut in (1, 8, 9, 10, 4096, 65536, len(stream) - 1):
        decoder = frames.FrameDecoder()
        got = list(decoder.feed(stream[:cut])) + list(decoder.feed(stream[cut:]))
        assert [(k, i, len(p)) for k, i, p in got] == [
            (frames.RUN, 7, 12), (frames.STDOUT, 7, 70000), (frames.DONE, 7, 2)]


def test_oversized_frame_is_a_protocol_error() -> None:
    """A length over the cap is refused instead of buffering without bound."""
    header = frames.HEADER.pack(frames.DONE, 1, frames.MAX_PAYLOAD + 1)
    with pytest.raises(frames.FrameError):
        list(frames.FrameDecoder().feed(header))


def _capture(fmt: str, limit: int = 1 << 20):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    return LogWriter(fmt, limit, out_w, err_w), (out_r, out_w), (err_r, err_w)


def _read(pair: tuple[int, int]) -> bytes:
    os.close(pair[1])
    with os.fdopen(pair[0], "rb") as handle:
        return handle.read()


def test_sentinel_block_ends_unterminated_output_with_a_newline() -> None:
    """The sentinel always starts its own line, even after output without a newline."""
    writer, out, err = _capture("sentinel")
    logs = ActivationLogs()
    logs.add(False, b"no newline", 100)
    writer.activation(logs, "id1")
    assert _read(out) == b"no newline\n" + SENTINEL
    assert _read(err) == SENTINEL


def test_log_limit_truncates_with_the_openwhisk_notice() -> None:
    """Past the per-activation limit output is cut and the notice says so."""
    writer, out, err = _capture("sentinel", limit=10)
    logs = ActivationLogs()
    logs.add(False, b"0123456789abcdef", 10)
    writer.activation(logs, "id1")
    assert _read(out) == b"0123456789\n" + SENTINEL
    assert b"Logs were truncated because the total bytes size exceeds the limit of 10 bytes." in _read(err)


def test_json_lines_carry_the_activation_id() -> None:
    """JSON format: one object per line, stream and activation id on each, no sentinels."""
    writer, out, err = _capture("json")
    logs = ActivationLogs()
    logs.add(False, b"one\ntwo\n", 100)
    logs.add(True, b"oops\n", 100)
    writer.activation(logs, "abc")
    records = [json.loads(line) for line in _read(out).splitlines()]
    assert [(r["activationId"], r["stream"], r["message"]) for r in records] == [
        ("abc", "stdout", "one"), ("abc", "stdout", "two"), ("abc", "stderr", "oops")]
    assert _read(err) == b""
