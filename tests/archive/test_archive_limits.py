"""Hostile archives stop at the first limit as extraction goes (entries, bytes, seconds), in
bounded proxy memory; malformed ones are a clean JSON error; no failed /init leaves its folder.

Before: a tar.gz of 2M empty members took 85 s and 967 MB of proxy memory before its error, a
zip of 600k entries 6.5 s and 535 MB; a zip entry with an empty name was a plain-text 500; 40
failed inits left 201 MB of folders behind. Real proxies over HTTP; the last test calls
actionproxy.archive directly with many corrupted archives.
"""

from __future__ import annotations

import base64
import io
import random
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

from actionproxy import archive
from actionproxy.config import ArchiveLimits
from conftest import Proxy, zip_b64

COMPILE_FAILED = "The action failed to generate or locate a binary. See logs for details."
MAIN = "def main(args):\n    return {'ok': 1}\n"


def init_archive(proxy: Proxy, data: bytes) -> tuple[int, object]:
    return proxy.init(base64.b64encode(data).decode(), binary=True)


def gzip_member(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def repeated_tar_gz(first: bytes, repeated: bytes, times: int) -> bytes:
    """A tar.gz whose decompressed stream is `first`, `repeated` `times` times, and the end-of-archive
    blocks: one small gzip member repeated (a gzip stream may hold many), so it is cheap to build."""
    return gzip_member(first) + gzip_member(repeated) * times + gzip_member(b"\0" * 1024)


def tar_header(name: str, size: int = 0) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def proxy_peak_rss(proxy: Proxy) -> int:
    """The proxy process's peak resident memory in bytes (VmHWM)."""
    for line in Path(f"/proc/{proxy.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def folders_left(tmp_path: Path, proxy: Proxy) -> list[Path]:
    return list((tmp_path / f"actions-{proxy.port}").glob("*"))


def test_a_tar_gz_of_millions_of_members_stops_at_the_entry_limit(start_proxy, tmp_path: Path) -> None:
    """2M empty members (1 GB of tar in 1 MB of gzip) against a limit of 1,000: a 413 naming the
    limit, the proxy's peak memory grows by far less than the archive's headers would take, and
    nothing is left behind."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_ARCHIVE_ENTRIES": "1000"})
    data = repeated_tar_gz(tar_header("__main__.py", len(MAIN)) + MAIN.encode().ljust(512, b"\0"),
                           tar_header("empty") * 2000, 1000)
    before = proxy_peak_rss(proxy)
    assert init_archive(proxy, data) == (413, {"error": "The archive has more than 1000 entries "
                                                        "(ACTIONPROXY_MAX_ARCHIVE_ENTRIES)"})
    grown = proxy_peak_rss(proxy) - before
    assert grown < 64 << 20, f"the proxy's peak memory grew by {grown >> 20} MiB"
    assert folders_left(tmp_path, proxy) == []
    assert proxy.init(zip_b64({"__main__.py": MAIN}), binary=True) == (200, {"ok": True})


def many_entry_zip(count: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as out:
        out.writestr("__main__.py", MAIN)
        for i in range(count):
            out.writestr(f"e{i}", b"")
    return buf.getvalue()


def with_declared_count(data: bytes, count: int) -> bytes:
    """The zip with its end record declaring `count` entries, whatever its directory holds."""
    end = data.rindex(b"PK\x05\x06")
    return data[:end + 8] + struct.pack("<2H", count, count) + data[end + 12:]


@pytest.mark.parametrize("declared", ["true", "understated"])
def test_a_zip_with_more_entries_than_the_limit_is_refused_before_it_is_read(
        start_proxy, tmp_path: Path, declared: str) -> None:
    """The entry count is checked from the central directory itself, so an end record that
    understates it does not get the whole directory parsed."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_ARCHIVE_ENTRIES": "1000"})
    data = many_entry_zip(5000)
    if declared == "understated":
        data = with_declared_count(data, 10)
    assert init_archive(proxy, data) == (413, {"error": "The archive has more than 1000 entries "
                                                        "(ACTIONPROXY_MAX_ARCHIVE_ENTRIES)"})
    assert folders_left(tmp_path, proxy) == []
    assert init_archive(proxy, many_entry_zip(900)) == (200, {"ok": True})


def test_extraction_stops_at_the_time_limit(start_proxy, tmp_path: Path) -> None:
    """7 GiB of zeros (7 MB of gzip) under a size limit it fits: ACTIONPROXY_MAX_ARCHIVE_SECONDS=1
    stops it long before it ends, with a 413 naming that limit, and the partial file is removed."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_ARCHIVE_SECONDS": "1",
                             "ACTIONPROXY_MAX_ARCHIVE": str(16 << 30)})
    block = 1 << 20
    data = repeated_tar_gz(tar_header("zeros", 7 << 30), b"\0" * block, 7 << 10)
    assert init_archive(proxy, data) == (413, {"error": "Extracting the archive took more than 1 s "
                                                        "(ACTIONPROXY_MAX_ARCHIVE_SECONDS)"})
    assert folders_left(tmp_path, proxy) == []


def empty_name_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        out.writestr("__main__.py", MAIN)
        out.writestr(zipfile.ZipInfo(""), b"x")
    return buf.getvalue()


def test_a_zip_entry_with_an_empty_name_is_a_json_error(proxy: Proxy, tmp_path: Path) -> None:
    """Was a plain-text 500 (IndexError). Now the contract's JSON 502 for a failed extraction, the
    log naming the problem, and a good init after it."""
    data = empty_name_zip()
    assert [i.filename for i in zipfile.ZipFile(io.BytesIO(data)).infolist()] == ["__main__.py", ""]
    assert init_archive(proxy, data) == (502, {"error": COMPILE_FAILED})
    _, err = proxy.check_streams(sentinels=1)
    assert "empty name" in err, err
    assert folders_left(tmp_path, proxy) == []
    assert proxy.init(zip_b64({"__main__.py": MAIN}), binary=True) == (200, {"ok": True})


@pytest.mark.parametrize("code, binary", [
    ("def main(args)\n    return {}\n", False),  # a syntax error, found by the launcher
    (zip_b64({"other.py": MAIN}), True),  # a zip without __main__.py
    (zip_b64({"exec": "#!/bin/sh\nexit 3\n"}, {"exec": 0o755}), True),  # an executable that dies at start
], ids=["syntax-error", "no-entry-file", "exec-exits"])
def test_a_failed_init_leaves_no_folder_behind(start_proxy, tmp_path: Path, code: str, binary: bool) -> None:
    proxy = start_proxy()
    for _ in range(3):
        status, _ = proxy.init(code, binary=binary)
        assert status == 502
        assert folders_left(tmp_path, proxy) == []
    assert proxy.init(MAIN) == (200, {"ok": True})
    assert len(folders_left(tmp_path, proxy)) == 1


def corruptions(data: bytes, count: int) -> list[bytes]:
    """Truncations and random byte changes of a valid archive."""
    rng = random.Random(7)
    out = [data[:n] for n in range(0, len(data), max(1, len(data) // 40))]
    for _ in range(count):
        changed = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            changed[rng.randrange(len(changed))] = rng.randrange(256)
        out.append(bytes(changed))
    return out


def test_malformed_archives_raise_only_archive_errors(tmp_path: Path) -> None:
    """Whatever zipfile, tarfile and the decompressors raise on corrupt input becomes an
    ArchiveError (a clean JSON error over HTTP), never an unexpected exception."""
    files = {"__main__.py": MAIN, "sub/helper.py": "X = 1\n" * 50, "data.bin": bytes(range(256)) * 8}
    zipped = base64.b64decode(zip_b64(files))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as out:
        for name, content in files.items():
            raw = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            out.addfile(info, io.BytesIO(raw))
    for n, data in enumerate(corruptions(zipped, 300) + corruptions(buf.getvalue(), 300)):
        try:
            archive.materialize(data, "main", tmp_path / str(n), ArchiveLimits(1 << 20), "python")
        except archive.ArchiveError:
            pass
