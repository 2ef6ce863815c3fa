"""Unit checks of the two byte formats the proxy owns: v2 frames and log blocks."""

from __future__ import annotations

import json
import os
import random
import socket

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


SIZES = (0, 1, 8, frames.LARGE - 1, frames.LARGE, frames.LARGE + 1, frames.SCRATCH - 9,
         frames.SCRATCH, 3 * frames.SCRATCH + 5)


def _stream(seed: int) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """Frames of sizes around the decoder's edges, in a shuffled order, with distinct bytes."""
    rng = random.Random(seed)
    sent = [(frames.DONE, n, bytes([n % 251]) * size) for n, size in enumerate(SIZES * 3)]
    rng.shuffle(sent)
    return b"".join(frames.encode(*frame) for frame in sent), sent


@pytest.mark.parametrize("seed", range(5))
def test_frames_of_every_size_survive_random_reads(seed: int) -> None:
    """Read from a real socket as the channel reads (into the decoder's own buffers, reads cut
    at random sizes), every frame comes out whole and in order; large payloads come out as
    buffers of their exact size, read into directly."""
    stream, sent = _stream(seed)
    rng = random.Random(seed)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    decoder = frames.FrameDecoder()
    got: list[tuple[int, int, bytes | bytearray]] = []
    with ours, theirs:
        offset = 0
        while offset < len(stream) or len(got) < len(sent):
            if offset < len(stream):
                step = rng.choice((1, 9, 100, 5000, frames.LARGE, 300_000))
                try:
                    offset += theirs.send(stream[offset:offset + step])
                except BlockingIOError:
                    pass
            try:
                size = os.readv(ours.fileno(), decoder.buffers())
            except BlockingIOError:
                continue
            got += decoder.filled(size)
    assert [(k, i, bytes(p)) for k, i, p in got] == sent
    # a payload the scratch cannot hold was read into a buffer of its own, handed on as it is
    assert all(isinstance(p, bytearray) for _, _, p in got if len(p) > frames.SCRATCH)


def test_feed_and_reads_mix() -> None:
    """Bytes read elsewhere (fed) and bytes read into the decoder's buffers make one stream."""
    stream, sent = _stream(7)
    decoder = frames.FrameDecoder()
    got = decoder.feed(stream[:frames.LARGE + 20])
    rest = stream[frames.LARGE + 20:]
    while rest:
        target = decoder.buffers()[-1] if len(decoder.buffers()) == 1 else decoder.buffers()[0]
        size = min(len(target), len(rest), 12345)
        target[:size] = rest[:size]
        rest = rest[size:]
        got += decoder.filled(size)
    assert [(k, i, bytes(p)) for k, i, p in got] == sent


def test_a_header_alone_reserves_little_and_a_huge_payload_still_arrives() -> None:
    """A header announcing up to a gigabyte makes the decoder reserve RESERVE bytes, not the
    announced size (the proxy must not be the one to run out of memory); a payload larger than
    RESERVE still arrives whole, its buffer growing as its bytes come."""
    decoder = frames.FrameDecoder()
    assert decoder.feed(frames.HEADER.pack(frames.DONE, 1, frames.MAX_PAYLOAD) + b"{") == []
    assert sum(map(len, decoder.buffers())) <= frames.RESERVE + frames.SCRATCH
    payload = bytes(range(256)) * ((2 * frames.RESERVE + 5) // 256 + 1)
    decoder = frames.FrameDecoder()
    stream = frames.encode(frames.DONE, 2, payload) + frames.encode(frames.DONE, 3, b"{}")
    got = []
    while stream:
        target = decoder.buffers()[0]
        size = min(len(target), len(stream), 3_000_000)
        target[:size] = stream[:size]
        del target
        stream = stream[size:]
        got += decoder.filled(size)
    assert [(k, i, len(p)) for k, i, p in got] == [(frames.DONE, 2, len(payload)), (frames.DONE, 3, 2)]
    assert got[0][2] == payload


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
