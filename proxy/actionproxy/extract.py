"""Extracting a zip or tar.gz action into its folder, safely and within limits.

Extraction never writes outside the folder: absolute names, `..` components and symlinks that
point out of it are refused or left out, files are never written through a link. It stops at
the first limit passed (bytes written, entries, seconds), checked as it goes: zip headers can
lie, so bytes are counted as they are written; a zip's entries are counted before zipfile
reads its directory, and a tar.gz is read as a stream, so a hostile archive never costs the
proxy memory per entry. Whatever malformed input makes the parsers raise is an ArchiveError.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from actionproxy.archive import ArchiveError, ArchiveTooLarge
from actionproxy.config import ArchiveLimits as Limits

HEADER_ROOM = 1 << 20  # bytes a tar entry's headers (pax, long names) may take: tarfile reads them whole
LINK_ROOM = 4096  # bytes a zip symlink's target may have (PATH_MAX)
# What zipfile, tarfile, gzip and the decompressors raise on malformed input, besides OSError
# (NotImplementedError, for an unsupported method or an encrypted entry, is a RuntimeError;
# UnicodeDecodeError a ValueError; IndexError and KeyError LookupErrors)
MALFORMED = (zipfile.BadZipFile, tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, struct.error,
             RuntimeError, ValueError, OverflowError, LookupError)
END = struct.Struct("<4s4H2LH")  # a zip's end of central directory record
END64_LOCATOR = struct.Struct("<4sLQL")
END64 = struct.Struct("<4sQ2H2L4Q")
CENTRAL_ENTRY = 46  # the fixed part of a central directory entry ...
CENTRAL_LENGTHS = struct.Struct("<3H")  # ... with its name, extra and comment lengths at offset 28


class _Budget:
    """What an extraction has used so far; the first limit passed stops it."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.entries = 0
        self.size = 0
        self.deadline = time.monotonic() + limits.seconds

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.entries:
            raise _too_many(self.limits)
        self.tick()

    def grow(self, size: int) -> None:
        self.size += size
        if self.size > self.limits.size:
            raise ArchiveTooLarge(f"The archive expands to more than {self.limits.size} bytes (ACTIONPROXY_MAX_ARCHIVE)")

    def tick(self) -> None:
        if time.monotonic() >= self.deadline:
            raise ArchiveTooLarge(f"Extracting the archive took more than {self.limits.seconds:g} s "
                               f"(ACTIONPROXY_MAX_ARCHIVE_SECONDS)")


def _too_many(limits: Limits) -> ArchiveError:
    return ArchiveTooLarge(f"The archive has more than {limits.entries} entries (ACTIONPROXY_MAX_ARCHIVE_ENTRIES)")


def _safe_target(root: Path, name: str) -> Path:
    if not name:
        raise ArchiveError("The archive has an entry with an empty name")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise ArchiveError(f"The archive entry {name!r} would be extracted outside the action folder")
    return root.joinpath(*pure.parts)


def _link_stays_inside(root: Path, link: Path, target: str) -> bool:
    if os.path.isabs(target):
        return False
    return _within(str(root), os.path.normpath(os.path.join(os.path.dirname(link), target)))


def _central_directory(data: bytes) -> tuple[int, int, int] | None:
    """(entry count the end record declares, start, size) of a zip's central directory, found
    where zipfile looks for it; None without an end record (zipfile then says what is wrong)."""
    end = len(data) - END.size
    if not (end >= 0 and data.startswith(b"PK\x05\x06", end) and data.endswith(b"\0\0")):
        end = data.rfind(b"PK\x05\x06", max(len(data) - (1 << 16) - END.size, 0))
        if end < 0 or end + END.size > len(data):
            return None
    count, size = END.unpack_from(data, end)[4:6]
    start = end - size
    locator = end - END64_LOCATOR.size
    record = locator - END64.size
    if record >= 0 and data.startswith(b"PK\x06\x07", locator) and data.startswith(b"PK\x06\x06", record):
        count, size = END64.unpack_from(data, record)[7:9]
        start = record - size
    return count, start, size


def _check_zip_entries(data: bytes, limits: Limits) -> None:
    """zipfile reads the whole central directory when it opens an archive, an object per entry,
    for as many entries as the directory's size holds, whatever count the end record declares:
    check the count, then walk the directory's entries, stopping just past the limit."""
    directory = _central_directory(data)
    if directory is None:
        return
    count, start, size = directory
    if count > limits.entries:
        raise _too_many(limits)
    position, end, seen = max(start, 0), min(start + size, len(data)), 0
    while position + CENTRAL_ENTRY <= end:
        seen += 1
        if seen > limits.entries:
            raise _too_many(limits)
        position += CENTRAL_ENTRY + sum(CENTRAL_LENGTHS.unpack_from(data, position + 28))


def extract_zip(data: bytes, root: Path, limits: Limits) -> None:
    budget = _Budget(limits)
    _check_zip_entries(data, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except MALFORMED as exc:
        raise ArchiveError(f"There was an error uncompressing the action archive: {exc}") from None
    links: list[tuple[Path, str]] = []
    for info in members:
        budget.tick()
        target = _safe_target(root, info.filename)
        mode = info.external_attr >> 16
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if stat.S_ISLNK(mode):
            links.append((target, _read_link(archive, info)))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_member(archive, info, target, budget)
        target.chmod(0o755 if mode & 0o111 else 0o644)
    made = []
    for link, pointee in links:
        if not _link_stays_inside(root, link, pointee):
            continue  # e.g. virtualenv/bin/python -> /usr/bin/python3: not needed to run, not followed
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(pointee, link)
        except (OSError, ValueError) as exc:  # ValueError: a NUL in the target
            raise ArchiveError(f"Cannot create the link {link.relative_to(root)}: {exc}") from None
        made.append(link)
    _drop_escaping_links(root, made)


def _drop_escaping_links(root: Path, links: list[Path]) -> None:
    """Links can chain (`d -> .`, `e -> d/..`): judge each by where it really leads once all
    exist, and remove those that lead outside, until none does."""
    inside = str(root.resolve())
    while True:
        escaping = [link for link in links if not _within(inside, os.path.realpath(link))]
        if not escaping:
            return
        for link in escaping:
            link.unlink()
            links.remove(link)


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _read_link(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """A symlink's target is its entry's content: read a path's worth, not all it expands to."""
    try:
        with archive.open(info) as src:
            pointee = src.read(LINK_ROOM + 1)
    except (*MALFORMED, OSError) as exc:
        raise ArchiveError(f"There was an error uncompressing {info.filename!r}: {exc}") from None
    if len(pointee) > LINK_ROOM:
        raise ArchiveError(f"The link {info.filename!r} points to a path longer than {LINK_ROOM} bytes")
    return pointee.decode("utf-8", "replace")


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: _Budget) -> None:
    # O_NOFOLLOW|O_EXCL: never write through a link or over an earlier entry
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as out, archive.open(info) as src:
            while chunk := src.read(1 << 20):
                budget.grow(len(chunk))
                budget.tick()
                out.write(chunk)
    except (*MALFORMED, OSError) as exc:
        raise ArchiveError(f"There was an error uncompressing {info.filename!r}: {exc}") from None


class _MeteredTarStream:
    """The decompressed tar stream for tarfile, read only as far as the entries seen so far
    allow: tarfile reads an entry's headers (pax, long names) whole into memory, so they may
    take HEADER_ROOM bytes past the previous entry's data and no more. Every read checks the
    clock, so a long copy or skip stops at the deadline too."""

    def __init__(self, data: bytes, budget: _Budget) -> None:
        self._source = gzip.GzipFile(fileobj=io.BytesIO(data))
        self._budget = budget
        self._position = 0
        self.allowed = HEADER_ROOM  # the stream position reads may reach

    def read(self, size: int) -> bytes:
        self._budget.tick()
        chunk = self._source.read(size)
        self._position += len(chunk)
        if self._position > self.allowed:
            raise ArchiveError(f"An entry of the archive has headers larger than {HEADER_ROOM} bytes")
        return chunk


def extract_tar(data: bytes, root: Path, limits: Limits) -> None:
    """Entry by entry from the stream ("r|"), each checked before it is written."""
    budget = _Budget(limits)
    stream = _MeteredTarStream(data, budget)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            while (member := archive.next()) is not None:
                archive.members.clear()  # a TarFile keeps every header it read: memory per entry
                stream.allowed = archive.offset + HEADER_ROOM  # archive.offset: past this entry's data
                budget.entry()
                budget.grow(member.size if member.isreg() else 0)
                _safe_target(root, member.name)
                if member.islnk() and not os.path.isfile(os.path.join(root, member.linkname)):
                    # else tarfile would read the rest of the stream looking for the target
                    raise ArchiveError(f"The hard link {member.name!r} does not point to a file "
                                       f"extracted before it ({member.linkname!r})")
                archive.extract(member, root, filter="data")
    except (*MALFORMED, OSError) as exc:
        raise ArchiveError(f"There was an error uncompressing the action archive: {exc}") from None
