"""Safe extraction of zip and tar.gz actions: through real /init calls, checked on the filesystem.

The proxy extracts into ACTIONPROXY_ACTION_DIR (the harness sets it to tmp_path/"actions-<port>").
Nothing may be written outside the action's own folder there: not by `..` or absolute names, not
by a symlink pointing out, not through such a link. The last tests call actionproxy.archive directly.
"""

from __future__ import annotations

import base64
import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from actionproxy import archive, extract
from actionproxy.config import ArchiveLimits
from conftest import Proxy, zip_b64

COMPILE_FAILED = "The action failed to generate or locate a binary. See logs for details."

# Reports what the action sees in its own folder (its working directory).
INSPECT = """
import os, subprocess

def main(args):
    out = {"cwd": os.getcwd(), "links": {}, "files": sorted(os.listdir("."))}
    for name in args.get("links", []):
        out["links"][name] = os.readlink(name) if os.path.islink(name) else None
    if "read" in args:
        with open(args["read"]) as handle:
            out["read"] = handle.read()
    if "exec" in args:
        out["exec"] = subprocess.run([args["exec"]], capture_output=True, text=True).stdout
    if "access" in args:
        out["access"] = {name: os.access(name, os.X_OK) for name in args["access"]}
    return out
"""

Entry = tuple[str, bytes | str, int]  # (name, content or link target, st_mode with file type)


def file(name: str, content: bytes | str, mode: int = 0o644) -> Entry:
    return (name, content, stat.S_IFREG | mode)


def link(name: str, target: str) -> Entry:
    return (name, target, stat.S_IFLNK | 0o777)


def zip_archive(entries: list[Entry]) -> bytes:
    """A zip with regular files and symlinks (unix mode in the high bits of external_attr)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, content)
    return buf.getvalue()


def tar_archive(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as out:
        for name, content, mode in entries:
            info = tarfile.TarInfo(name)
            info.mode = stat.S_IMODE(mode)
            if stat.S_ISLNK(mode):
                info.type, info.linkname = tarfile.SYMTYPE, str(content)
                out.addfile(info)
            else:
                data = content.encode() if isinstance(content, str) else content
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BUILDERS = {"zip": zip_archive, "tar.gz": tar_archive}


def init_archive(proxy: Proxy, data: bytes, main: str = "main") -> tuple[int, object]:
    return proxy.init(base64.b64encode(data).decode(), main=main, binary=True)


def action_dir(tmp_path: Path, proxy: Proxy) -> Path:
    return tmp_path / f"actions-{proxy.port}"


def tree(root: Path) -> set[str]:
    """Every path under root (relative), links included, not followed."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_links_stay_inside(root: Path) -> None:
    """Every symlink under root resolves to a path inside root."""
    real_root = os.path.realpath(root)
    for path in root.rglob("*"):
        if path.is_symlink():
            resolved = os.path.realpath(path)
            assert resolved == real_root or resolved.startswith(real_root + os.sep), (
                f"{path} -> {os.readlink(path)} resolves to {resolved}, outside {real_root}")


# ---------------------------------------------------------------- names that escape

ESCAPING_NAMES = ["../escaped.txt", "../../escaped.txt", "sub/../../escaped.txt"]


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("name", [*ESCAPING_NAMES, "ABSOLUTE"])
def test_entry_outside_the_folder_fails_init_and_writes_nothing(
        start_proxy, tmp_path: Path, kind: str, name: str) -> None:
    """An entry with `..` or an absolute name fails /init with 502 and nothing is written outside the action folder."""
    proxy = start_proxy()
    if name == "ABSOLUTE":
        name = str(tmp_path / "escaped-absolute.txt")
    before = tree(tmp_path)
    data = BUILDERS[kind]([file("__main__.py", INSPECT), file(name, "pwned")])
    assert init_archive(proxy, data) == (502, {"error": COMPILE_FAILED})
    created = tree(tmp_path) - before - {"actions-%d" % proxy.port}
    assert not [p for p in created if "escaped" in p], created
    assert not [p for p in tree(action_dir(tmp_path, proxy)) if "escaped" in p]
    assert not any(action_dir(tmp_path, proxy).glob("*")), "a failed init leaves no action folder"
    out, err = proxy.check_streams(sentinels=1)
    assert out == ""


def test_symlinks_pointing_outside_are_not_created(start_proxy, tmp_path: Path) -> None:
    """Zip symlinks to /etc, to an absolute path or up via `..` are left out; the action still loads and runs."""
    proxy = start_proxy()
    outside = tmp_path / "outside"
    outside.mkdir()
    names = ["etc", "abs", "up"]
    data = zip_archive([
        link("etc", "/etc"), link("abs", str(outside)), link("up", "../../outside"),
        file("__main__.py", INSPECT)])
    assert init_archive(proxy, data) == (200, {"ok": True})
    status, body = proxy.run({"links": names})
    assert status == 200, body
    assert body["links"] == {name: None for name in names}, body
    assert_links_stay_inside(Path(body["cwd"]))


def test_symlink_chain_cannot_point_outside(start_proxy, tmp_path: Path) -> None:
    """A symlink that only escapes once an earlier one is followed (`d -> .`, `e -> d/..`) is not created pointing outside."""
    proxy = start_proxy()
    data = zip_archive([link("d", "."), link("e", "d/.."), file("__main__.py", INSPECT)])
    status, body = init_archive(proxy, data)
    assert status in (200, 502), body
    for folder in action_dir(tmp_path, proxy).iterdir():
        assert_links_stay_inside(folder)


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("target", ["ABSOLUTE", "../../outside", "../../../outside"])
def test_no_file_is_written_through_a_link_pointing_outside(
        start_proxy, tmp_path: Path, kind: str, target: str) -> None:
    """A file entry "through" a symlink that points outside never lands outside (init may refuse the archive)."""
    proxy = start_proxy()
    outside = tmp_path / "outside"
    outside.mkdir()
    if target == "ABSOLUTE":
        target = str(outside)
    data = BUILDERS[kind]([link("out", target), file("out/pwned.txt", "pwned"), file("__main__.py", INSPECT)])
    status, body = init_archive(proxy, data)
    assert status in (200, 502), body
    assert list(outside.iterdir()) == [], "nothing may be written through the link"
    for folder in action_dir(tmp_path, proxy).iterdir():
        assert_links_stay_inside(folder)


@pytest.mark.parametrize("kind", BUILDERS)
def test_symlink_inside_the_folder_works(start_proxy, kind: str) -> None:
    """A symlink to a file inside the action folder is created and readable through."""
    proxy = start_proxy()
    data = BUILDERS[kind]([
        file("__main__.py", INSPECT), file("data/real.txt", "real content"),
        link("alias.txt", "data/real.txt"), link("data/again.txt", "real.txt")])
    assert init_archive(proxy, data) == (200, {"ok": True})
    status, body = proxy.run({"links": ["alias.txt"], "read": "data/again.txt"})
    assert status == 200, body
    assert body["links"] == {"alias.txt": "data/real.txt"}
    assert body["read"] == "real content"
    status, body = proxy.run({"read": "alias.txt"})
    assert body["read"] == "real content", body


def test_symlink_colliding_with_another_entry_fails_init_cleanly(start_proxy) -> None:
    """A zip whose symlink name is already taken by another entry fails /init with a 502 JSON error, and a new /init works."""
    proxy = start_proxy()
    data = zip_archive([file("__main__.py", INSPECT), file("x/y.txt", "y"), link("x", "data")])
    status, parsed, raw = proxy.post("/init", {"value": {
        "code": base64.b64encode(data).decode(), "main": "main", "binary": True}})
    assert (status, parsed) == (502, {"error": COMPILE_FAILED}), raw
    assert proxy.init(zip_b64({"__main__.py": INSPECT}), binary=True) == (200, {"ok": True})


# ---------------------------------------------------------------- size cap

@pytest.mark.parametrize("kind", BUILDERS)
def test_archive_expanding_past_the_cap_fails_init(start_proxy, tmp_path: Path, kind: str) -> None:
    """With ACTIONPROXY_MAX_ARCHIVE=1000, an archive expanding beyond 1000 bytes fails /init with
    a 413 naming the limit (the sender's to fix), and the log says it too."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_ARCHIVE": "1000"})
    data = BUILDERS[kind]([file("__main__.py", INSPECT), file("big.txt", "a" * 5000)])
    assert len(data) < 1000, "the archive itself is small; only its contents are big"
    assert init_archive(proxy, data) == (413, {"error": "The archive expands to more than 1000 bytes "
                                                        "(ACTIONPROXY_MAX_ARCHIVE)"})
    out, err = proxy.check_streams(sentinels=1)
    assert "1000" in err, err
    assert not any(action_dir(tmp_path, proxy).glob("*/big.txt"))


@pytest.mark.parametrize("kind", BUILDERS)
def test_archive_within_the_cap_works(start_proxy, kind: str) -> None:
    """With ACTIONPROXY_MAX_ARCHIVE=1000, an archive expanding below it loads and runs."""
    proxy = start_proxy(env={"ACTIONPROXY_MAX_ARCHIVE": "1000"})
    data = BUILDERS[kind]([file("__main__.py", "def main(args):\n    return {'small': True}\n")])
    assert init_archive(proxy, data) == (200, {"ok": True})
    assert proxy.run({}) == (200, {"small": True})


# ---------------------------------------------------------------- formats and modes

def test_tar_gz_action_works(proxy: Proxy) -> None:
    """A tar.gz with __main__.py and a helper module loads and runs, with a non-default entry point."""
    data = tar_archive([
        file("__main__.py", "from helper import echo\ndef niam(args):\n    return echo(args)\n"),
        file("helper.py", "def echo(args):\n    return {'echo': args}\n")])
    assert init_archive(proxy, data, main="niam") == (200, {"ok": True})
    assert proxy.run({"msg": "it works"}) == (200, {"echo": {"msg": "it works"}})


@pytest.mark.parametrize("kind", BUILDERS)
def test_executable_bit_from_the_archive_is_honoured(start_proxy, tmp_path: Path, kind: str) -> None:
    """Files marked executable in the archive are executable after extraction; the others are not."""
    proxy = start_proxy()
    data = BUILDERS[kind]([
        file("__main__.py", INSPECT), file("tool.sh", "#!/bin/sh\necho tool ran\n", 0o755),
        file("data.txt", "plain", 0o644), file("bin/other.sh", "#!/bin/sh\necho other\n", 0o700)])
    assert init_archive(proxy, data) == (200, {"ok": True})
    status, body = proxy.run({"exec": "./tool.sh", "access": ["tool.sh", "data.txt", "bin/other.sh"]})
    assert status == 200, body
    assert body["exec"] == "tool ran\n"
    assert body["access"] == {"tool.sh": True, "data.txt": False, "bin/other.sh": True}
    root = Path(body["cwd"])
    assert (root / "tool.sh").stat().st_mode & 0o111
    assert not (root / "data.txt").stat().st_mode & 0o111


def test_zip_exec_action_loop_works(proxy: Proxy) -> None:
    """A zip with an `exec` bash script runs as an action-loop executable."""
    script = '#!/bin/bash\nwhile read line; do echo \'{"exec":"Hello, Demo"}\' >&3; done\n'
    assert init_archive(proxy, zip_archive([file("exec", script, 0o755)])) == (200, {"ok": True})
    assert proxy.run({"name": "Demo"}) == (200, {"exec": "Hello, Demo"})


@pytest.mark.parametrize("kind", BUILDERS)
def test_archive_without_main_or_exec_fails_init(start_proxy, kind: str) -> None:
    """An archive with neither __main__.py nor exec fails /init with 502 and stderr says "Zip file does not include"."""
    proxy = start_proxy()
    data = BUILDERS[kind]([file("echo.py", "def echo(args):\n    return {'echo': args}\n")])
    status, body = init_archive(proxy, data, main="echo")
    assert status == 502, body
    out, err = proxy.check_streams(sentinels=1)
    assert out == ""
    assert "Zip file does not include" in err, err


def test_corrupt_zip_fails_init_cleanly(proxy: Proxy) -> None:
    """A truncated zip fails /init with a 502 JSON error, and a new /init works."""
    data = zip_archive([file("__main__.py", INSPECT), file("pad.bin", os.urandom(4000))])
    assert init_archive(proxy, data[: len(data) // 2]) == (502, {"error": COMPILE_FAILED})
    assert proxy.init(zip_b64({"__main__.py": INSPECT}), binary=True) == (200, {"ok": True})


# ---------------------------------------------------------------- actionproxy.archive directly

def test_unit_materialize_kinds(tmp_path: Path) -> None:
    """materialize (python): source -> launcher, `#!` script -> executable, archives -> entry file."""
    def make(code: bytes, name: str, runtime: str = "python") -> archive.ActionSource:
        return archive.materialize(code, "main", tmp_path / name, ArchiveLimits(10_000), runtime)

    py = make(b"def main(a):\n    return a\n", "py")
    assert (py.kind, py.entry, py.source) == ("launcher", "__main__.py", True)
    sh = make(b"#!/bin/bash\necho\n", "sh")
    assert (sh.kind, sh.entry) == ("executable", "exec")
    assert (tmp_path / "sh" / "exec").stat().st_mode & 0o111
    assert make(b"#!/usr/bin/env python3\ndef main(a):\n    return a\n", "shebang").kind == "launcher"
    assert make(zip_archive([file("exec", "#!/bin/sh\n")]), "zip").kind == "executable"
    tarred = make(tar_archive([file("__main__.py", "")]), "tar")
    assert (tarred.kind, tarred.source) == ("launcher", False)


def test_unit_materialize_nodejs_and_blackbox(tmp_path: Path) -> None:
    """materialize per runtime: Node source -> index.js, a package -> resolved by the launcher;
    blackbox -> any text is the executable, an archive needs `exec`."""
    def make(code: bytes, name: str, runtime: str) -> archive.ActionSource:
        return archive.materialize(code, "main", tmp_path / name, ArchiveLimits(10_000), runtime)

    js = make(b"function main(a) { return a; }\n", "js", "nodejs")
    assert (js.kind, js.entry, js.source) == ("launcher", "index.js", True)
    assert make(b"#!/usr/bin/env node\nfunction main(a) {}\n", "jsbang", "nodejs").kind == "launcher"
    assert make(b"#!/bin/bash\n", "jsbash", "nodejs").kind == "executable"
    package = make(zip_archive([file("package.json", "{}"), file("exec", "x")]), "pkg", "nodejs")
    assert (package.kind, package.entry) == ("launcher", "")
    assert make(zip_archive([file("exec", "#!/bin/sh\n")]), "jsexec", "nodejs").kind == "executable"
    text = make(b"echo no shebang\n", "bb", "blackbox")
    assert (text.kind, text.entry) == ("executable", "exec")
    assert make(zip_archive([file("exec", "#!/bin/sh\n")]), "bbzip", "blackbox").kind == "executable"
    with pytest.raises(archive.ArchiveError, match="exec"):
        make(zip_archive([file("other", "x")]), "bbbad", "blackbox")


@pytest.mark.parametrize("name", [*ESCAPING_NAMES, "/etc/escaped.txt"])
def test_unit_extract_zip_refuses_escaping_names(tmp_path: Path, name: str) -> None:
    """extract_zip raises ArchiveError for `..` and absolute names and writes nothing outside."""
    root = tmp_path / "a" / "b" / "root"
    root.mkdir(parents=True)
    with pytest.raises(archive.ArchiveError):
        extract.extract_zip(zip_archive([file(name, "x")]), root, ArchiveLimits(10_000))
    assert not [p for p in tree(tmp_path) if "escaped" in p]


def test_unit_extract_zip_counts_bytes_against_the_cap(tmp_path: Path) -> None:
    """extract_zip stops at the byte cap, whatever the entry count."""
    many = zip_archive([file(f"f{i}.txt", "x" * 300) for i in range(5)])
    capped, fits = tmp_path / "capped", tmp_path / "fits"
    capped.mkdir()
    fits.mkdir()
    with pytest.raises(archive.ArchiveError, match="1000"):
        extract.extract_zip(many, capped, ArchiveLimits(1000))
    extract.extract_zip(many, fits, ArchiveLimits(1500))
    assert len(list(fits.iterdir())) == 5


def test_unit_detection() -> None:
    """is_zip / is_gzip / is_executable_file recognise their magic bytes."""
    assert archive.is_zip(zip_archive([file("a", "b")]))
    assert archive.is_gzip(tar_archive([file("a", "b")]))
    assert not archive.is_zip(b"def main(): pass")
    assert archive.is_executable_file(b"\x7fELF\x02\x01", "main", "python")
    assert archive.is_executable_file(b"#!/bin/bash\n", "main", "python")
    assert not archive.is_executable_file(b"#!/usr/bin/env python\nasync def main(a):\n    pass\n", "main", "python")
