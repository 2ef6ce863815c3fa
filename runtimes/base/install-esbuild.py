"""esbuild, the TypeScript transpiler of the Node.js launcher, into <prefix>/node_modules: the
npm package and its binary for this machine, from the npm registry, each checked against the
registry's integrity hash. Standard library only, so that it runs where npm does not: a runtime
image's builder stage, and `make dev`. Behind a TLS-intercepting proxy, SSL_CERT_FILE (or the
BuildKit secret at /run/secrets/ca_bundle) names the CA bundle.

Usage: python3 install-esbuild.py PREFIX
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import platform
import shutil
import ssl
import sys
import tarfile
import urllib.parse
import urllib.request
from pathlib import Path

VERSION = "0.28.2"
REGISTRY = "https://registry.npmjs.org"
BINARIES = {"x86_64": "@esbuild/linux-x64", "aarch64": "@esbuild/linux-arm64"}
SECRET = Path("/run/secrets/ca_bundle")


def fetch(url: str, context: ssl.SSLContext) -> bytes:
    with urllib.request.urlopen(url, timeout=60, context=context) as response:
        return response.read()


def install(name: str, prefix: Path, context: ssl.SSLContext) -> None:
    meta = json.loads(fetch(f"{REGISTRY}/{urllib.parse.quote(name, safe='@')}/{VERSION}", context))
    tarball = fetch(meta["dist"]["tarball"], context)
    algorithm, _, expected = meta["dist"]["integrity"].partition("-")
    if base64.b64encode(hashlib.new(algorithm, tarball).digest()).decode() != expected:
        raise SystemExit(f"install-esbuild: {name} {VERSION} does not match the registry's {algorithm}")
    target = prefix / "node_modules" / name
    shutil.rmtree(target, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(tarball)) as archive:  # files only, inside target: written by hand
        for member in archive.getmembers():  # (tarfile's extraction filters are newer than some Pythons 3.11)
            parts = Path(member.name).parts
            if not member.isfile() or parts[:1] != ("package",) or ".." in parts or len(parts) < 2:
                continue
            path = target.joinpath(*parts[1:])
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.extractfile(member).read())
            path.chmod(0o755 if member.mode & 0o111 else 0o644)


def main() -> None:
    prefix = Path(sys.argv[1])
    binary = BINARIES.get(platform.machine())
    if binary is None:
        raise SystemExit(f"install-esbuild: no esbuild binary for {platform.machine()}")
    cafile = os.environ.get("SSL_CERT_FILE") or (str(SECRET) if SECRET.is_file() and SECRET.stat().st_size else None)
    context = ssl.create_default_context(cafile=cafile)
    for name in ("esbuild", binary):
        install(name, prefix, context)
    print(f"install-esbuild: esbuild {VERSION} in {prefix / 'node_modules'}")


if __name__ == "__main__":
    main()
