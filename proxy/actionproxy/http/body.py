"""Reading a request body whole, within ACTIONPROXY_MAX_BODY, decoding its Content-Encoding here.

aiohttp decodes gzip and deflate itself but answers a corrupt body with a plain-text 500 and an
unknown coding with a plain-text 400, and its size limit counts the encoded bytes. The server
turns its decoding off (`auto_decompress=False`); this module inflates each coding with a cap on
the output, so a small gzip bomb is a 413, and every failure is a JSON 4xx naming the coding.
"""

from __future__ import annotations

import zlib

from aiohttp import web

from actionproxy import errors
from actionproxy.activation import ActivationResult

GZIP, ZLIB, RAW_DEFLATE = 31, 15, -15  # zlib's wbits for each container
CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


class _Refused(Exception):
    def __init__(self, result: ActivationResult) -> None:
        self.result = result


async def read_body(request: web.Request, limit: int) -> bytes | ActivationResult:
    """The decoded body, or the error to answer with."""
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return errors.body_too_large(limit)
    header = request.headers.get("Content-Encoding")
    if not header:  # the usual request: nothing to decode
        return data
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    unknown = next((c for c in codings if c not in CODINGS), None)
    if unknown is not None:
        return errors.error(415, f"The request's Content-Encoding {unknown!r} is not supported: "
                                 f"send the body as gzip, deflate or identity.")
    try:
        for coding in reversed(codings):  # the last coding listed was applied last
            data = _gunzip(data, limit) if CODINGS[coding] == "gzip" else _inflate(data, limit)
    except _Refused as refused:
        return refused.result
    return data


def _gunzip(data: bytes, limit: int) -> bytes:
    """gzip members one after another (a valid gzip stream may hold several); nothing else."""
    out = bytearray()
    while data:
        data = _stream(zlib.decompressobj(GZIP), data, out, limit, "gzip")
    return bytes(out)


def _inflate(data: bytes, limit: int) -> bytes:
    """deflate as HTTP means it (zlib-wrapped), or raw deflate as some clients send it."""
    out = bytearray()
    wbits = ZLIB if data[:1] and (data[0] & 0x0F) == 8 and int.from_bytes(data[:2], "big") % 31 == 0 \
        else RAW_DEFLATE
    rest = _stream(zlib.decompressobj(wbits), data, out, limit, "deflate")
    if rest:
        raise _Refused(_corrupt("deflate", "data follows the end of the stream"))
    return bytes(out)


def _stream(decoder: zlib._Decompress, data: bytes, out: bytearray, limit: int, coding: str) -> bytes:
    """Inflate one stream into `out`, at most to the limit; returns what follows the stream."""
    try:
        out += decoder.decompress(data, limit - len(out) + 1)
    except zlib.error as exc:
        raise _Refused(_corrupt(coding, str(exc))) from None
    if len(out) > limit:
        raise _Refused(errors.body_too_large(limit))
    if not decoder.eof:
        raise _Refused(_corrupt(coding, "the stream ends early"))
    return decoder.unused_data


def _corrupt(coding: str, detail: str) -> ActivationResult:
    return errors.error(400, f"The request body is not valid {coding} (Content-Encoding): {detail}.")
