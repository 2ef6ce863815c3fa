"""`actionproxy serve --runtime python [--port N]` and `actionproxy --version`.

Start-up order is the cold-start design: bind the port (the platform's connects queue in the
backlog), start the stem-cell launcher, and only then import the HTTP stack, which takes
longer than the launcher does to get ready.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from actionproxy import __version__
from actionproxy.config import PLATFORMS, RUNTIMES, Config
from actionproxy.pid1 import become_init_if_pid1


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)  # connections queue here while aiohttp is still being imported
    return sock


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="actionproxy", description=__doc__.split("\n")[0])
    top.add_argument("--version", action="version", version=f"actionproxy {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the OpenWhisk action contract over HTTP")
    serve.add_argument("--runtime", required=True, choices=RUNTIMES)
    serve.add_argument("--port", type=int, help="listen port (default: $PORT, else 8080)")
    serve.add_argument("--init", type=Path, metavar="FILE",
                       help="load this source file or zip at start, as POST /init would")
    serve.add_argument("--main", default="main", help="entry point for --init (default: main)")
    serve.add_argument("--platform", choices=PLATFORMS,
                       help="contract to serve (default: $__OW_RUNTIME_PLATFORM, else openwhisk)")
    from actionproxy import ksvc  # argparse only; PyYAML is imported when a manifest is written

    ksvc.add_parser(commands)
    from actionproxy import bake

    bake.add_parsers(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    local = "--local" in argv or any(a == "--source" or a.startswith("--source=") for a in argv)
    if argv[:1] == ["build"] and not local:  # --source DIR is a local folder: bake.run_build's branch
        from actionproxy.tekton.cli import run as run_cluster_build  # kubernetes is imported lazily there

        return run_cluster_build(argv[1:])
    args = parser().parse_args(argv)
    if args.command == "ksvc":
        from actionproxy.ksvc import run

        return run(args)
    if args.command in ("bake", "build"):
        from actionproxy import bake

        return bake.run_bake(args) if args.command == "bake" else bake.run_build(args)
    if args.command == "serve":
        become_init_if_pid1()
    try:
        config = Config.from_env(args.runtime, args.port, platform=args.platform,
                                 init_file=args.init, init_main=args.main)
    except ValueError as exc:
        print(f"actionproxy: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind(config.host, config.port)
    except OSError as exc:
        print(f"actionproxy: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    from actionproxy.executor.stemcell import spawn_stem_cell, worker_socket_path

    socket_path = worker_socket_path()
    stem = spawn_stem_cell(config, socket_path) if config.launcher is not None else None
    from actionproxy.server import serve

    serve(config, sock, stem, socket_path)
    return 0
