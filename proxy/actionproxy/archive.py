"""Turns the `/init` code into an action folder: plain source, zip, or tar.gz, safely extracted.

Archives are extracted by actionproxy.extract, imported only for an archive: plain source,
the usual case, costs no archive module at start-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from actionproxy.config import ArchiveLimits as Limits

EXECUTABLE = "exec"
SOURCE_FILES = {"python": "__main__.py", "nodejs": "index.js"}  # where plain-text code is written
INTERPRETERS = {"python": b"python", "nodejs": b"node"}


class ArchiveError(Exception):
    """The code cannot become an action; the message is for the user's logs."""


class ArchiveTooLarge(ArchiveError):
    """The archive passes a limit (bytes, entries, seconds): the sender's to fix, so it is told."""


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


def materialize(code: bytes, main: str, dest: Path, limits: Limits, runtime: str) -> ActionSource:
    """Write the code into `dest` and say what kind of action it is."""
    dest.mkdir(parents=True, exist_ok=False)
    try:
        return _materialize(code, main, dest, limits, runtime)
    except OSError as exc:  # entries that collide (a file where a folder must go, ...)
        raise ArchiveError(f"The action cannot be written to its folder: {exc}") from None


def _materialize(code: bytes, main: str, dest: Path, limits: Limits, runtime: str) -> ActionSource:
    if is_zip(code) or is_gzip(code):
        from actionproxy import extract

        (extract.extract_zip if is_zip(code) else extract.extract_tar)(code, dest, limits)
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


