"""Turns the `/init` code into an action folder: plain source, zip, or tar.gz, safely extracted.

Extraction never writes outside the folder: absolute names, `..` components and symlinks that
point out of it are refused or left out, files are never written through a link, and the
total size is capped (zip headers can lie, so bytes are counted as they are written).
"""

from __future__ import annotations

import io
import os
import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MAX_ENTRIES = 100_000
EXECUTABLE = "exec"
SOURCE_FILES = {"python": "__main__.py", "nodejs": "index.js"}  # where plain-text code is written
INTERPRETERS = {"python": b"python", "nodejs": b"node"}


class ArchiveError(Exception):
    """The code cannot become an action; the message is for the user's logs."""


@dataclass(frozen=True)
class ActionSource:
    """Where the action lives and how to start it.

    kind: 'launcher' (code for the runtime's language launcher) or 'executable' (a program).
    entry: the file to load or run, relative to root ('' = the launcher finds it, as Node.js
    does for a package). source: the code came as plain text (Node evaluates it differently).
    """

    kind: str
    root: Path
    entry: str
    main: str
    source: bool = False


def is_zip(data: bytes) -> bool:
    return data[:2] == b"PK" and data[2:3] in b"\x03\x05\x07" and data[3:4] in b"\x04\x06\x08"


def is_gzip(data: bytes) -> bool:
    return data[:3] == b"\x1f\x8b\x08"


def is_executable_file(data: bytes, main: str, runtime: str) -> bool:
    """ELF binaries and `#!` scripts run as programs (the action-loop protocol, or one process
    per activation in blackbox), except sources of the runtime's own language that merely
    carry a shebang: `#!...node`, or `#!...python` defining the entry function."""
    if data[:4] == b"\x7fELF":
        return True
    if not data.startswith(b"#!"):
        return runtime == "blackbox"  # the skeleton runs any text as /action/exec
    first_line = data.split(b"\n", 1)[0]
    interpreter = INTERPRETERS.get(runtime)
    if interpreter is None or interpreter not in first_line:
        return True
    if runtime == "python":
        return not re.search(rb"^(async\s+)?def\s+" + re.escape(main.encode()) + rb"\s*\(", data, re.M)
    return False


def materialize(code: bytes, main: str, dest: Path, max_bytes: int, runtime: str) -> ActionSource:
    """Write the code into `dest` and say what kind of action it is."""
    dest.mkdir(parents=True, exist_ok=False)
    try:
        return _materialize(code, main, dest, max_bytes, runtime)
    except OSError as exc:  # entries that collide (a file where a folder must go, ...)
        raise ArchiveError(f"The action cannot be written to its folder: {exc}") from None


def _materialize(code: bytes, main: str, dest: Path, max_bytes: int, runtime: str) -> ActionSource:
    if is_zip(code):
        extract_zip(code, dest, max_bytes)
        return _from_folder(dest, main, runtime)
    if is_gzip(code):
        extract_tar(code, dest, max_bytes)
        return _from_folder(dest, main, runtime)
    if is_executable_file(code, main, runtime):
        _write_file(dest / EXECUTABLE, code, 0o755)
        return ActionSource("executable", dest, EXECUTABLE, main)
    entry = SOURCE_FILES[runtime]
    _write_file(dest / entry, code, 0o644)
    return ActionSource("launcher", dest, entry, main, source=True)


def _from_folder(root: Path, main: str, runtime: str) -> ActionSource:
    exe = root / EXECUTABLE
    has_exec = exe.is_file() and not exe.is_symlink()
    if runtime == "python" and (root / SOURCE_FILES["python"]).is_file():
        return ActionSource("launcher", root, SOURCE_FILES["python"], main)
    if runtime == "nodejs" and not (has_exec and not _is_node_package(root, main)):
        return ActionSource("launcher", root, "", main)  # the launcher resolves the package
    if has_exec:
        exe.chmod(0o755)
        return ActionSource("executable", root, EXECUTABLE, main)
    if runtime == "blackbox":
        raise ArchiveError(f"The archive does not include an '{EXECUTABLE}' file at its root")
    raise ArchiveError(f"Zip file does not include {SOURCE_FILES['python']} (nor an '{EXECUTABLE}' executable)")


def _is_node_package(root: Path, main: str) -> bool:
    module = main.split(".", 1)[0] if "." in main else ""
    return ((root / "package.json").is_file() or (root / "index.js").is_file()
            or bool(module and ((root / module).exists() or (root / f"{module}.js").exists())))


def _write_file(path: Path, data: bytes, mode: int) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
    path.chmod(mode)


def _safe_target(root: Path, name: str) -> Path:
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise ArchiveError(f"The archive entry {name!r} would be extracted outside the action folder")
    return root.joinpath(*pure.parts)


def _link_stays_inside(root: Path, link: Path, target: str) -> bool:
    if os.path.isabs(target):
        return False
    return _within(str(root), os.path.normpath(os.path.join(os.path.dirname(link), target)))


def extract_zip(data: bytes, root: Path, max_bytes: int) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise ArchiveError(f"There was an error uncompressing the action archive: {exc}") from None
    if len(members) > MAX_ENTRIES:
        raise ArchiveError(f"The archive has more than {MAX_ENTRIES} entries")
    total = 0
    links: list[tuple[Path, str]] = []
    for info in members:
        target = _safe_target(root, info.filename)
        mode = info.external_attr >> 16
        if info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if stat.S_ISLNK(mode):
            links.append((target, archive.read(info).decode("utf-8", "replace")))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        total = _copy_member(archive, info, target, total, max_bytes)
        target.chmod(0o755 if mode & 0o111 else 0o644)
    made = []
    for link, pointee in links:
        if not _link_stays_inside(root, link, pointee):
            continue  # e.g. virtualenv/bin/python -> /usr/bin/python3: not needed to run, not followed
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(pointee, link)
        except OSError as exc:
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


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path,
                 total: int, max_bytes: int) -> int:
    # O_NOFOLLOW|O_EXCL: never write through a link or over an earlier entry
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with archive.open(info) as src, os.fdopen(fd, "wb") as out:
            while chunk := src.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise ArchiveError(f"The archive expands to more than {max_bytes} bytes")
                out.write(chunk)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise ArchiveError(f"There was an error uncompressing {info.filename!r}: {exc}") from None
    return total


def extract_tar(data: bytes, root: Path, max_bytes: int) -> None:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            members = archive.getmembers()
            if len(members) > MAX_ENTRIES:
                raise ArchiveError(f"The archive has more than {MAX_ENTRIES} entries")
            if sum(m.size for m in members if m.isfile()) > max_bytes:
                raise ArchiveError(f"The archive expands to more than {max_bytes} bytes")
            for member in members:
                _safe_target(root, member.name)
            archive.extractall(root, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"There was an error uncompressing the action archive: {exc}") from None
