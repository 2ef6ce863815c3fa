"""actionproxy: serve a function (serve), try one (run, invoke), and build and deploy function
images (bake, build, ksvc).

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


SERVE_HELP = "serve a function over HTTP: the OpenWhisk action contract, or Knative's"
TOOLS = {"ksvc": "write a Knative Service (and Trigger) manifest for a function image",
         "bake": "write a function image's Dockerfile and build context",
         "build": "build a function image, on a cluster with Tekton or with the local Docker daemon"}
TOOLS_MISSING = ("the build and deploy tools are not installed here (the runtime images leave them out): "
                 "pip install 'actionproxy[tools]'")


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)  # connections queue here while aiohttp is still being imported
    return sock


def port(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < number < 65536:
        raise argparse.ArgumentTypeError(f"{number} is not a port: use 1-65535")
    return number


def add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--runtime", required=True, choices=RUNTIMES,
                       help="what the function is: python or nodejs source, or blackbox (any executable)")
    serve.add_argument("--port", type=port, help="listen port (default: $PORT, else 8080)")
    serve.add_argument("--init", type=Path, metavar="FILE",
                       help="load this source file or zip at start, as POST /init would")
    serve.add_argument("--main", default="main", help="entry point for --init (default: main)")
    serve.add_argument("--platform", choices=PLATFORMS,
                       help="contract to serve (default: $__OW_RUNTIME_PLATFORM, else openwhisk)")
    serve.add_argument("--watch", action="store_true",
                       help="with --init, for development: load the function again when the file changes")


def serve_parser() -> argparse.ArgumentParser:
    """`serve` alone: starting a function imports no tool module (ksvc, bake, build)."""
    serve = argparse.ArgumentParser(prog="actionproxy serve", description=SERVE_HELP)
    add_serve_arguments(serve)
    serve.set_defaults(command="serve")
    return serve


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="actionproxy", description=__doc__.split("\n")[0])
    top.add_argument("--version", action="version", version=f"actionproxy {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    add_serve_arguments(commands.add_parser("serve", help=SERVE_HELP, description=SERVE_HELP))
    from actionproxy import invoke

    invoke.add_parsers(commands)
    try:
        from actionproxy.tools import bake, ksvc  # argparse only; PyYAML is imported when a manifest is written
    except ImportError:  # a runtime image, or an install without the tools extra
        for name, what in TOOLS.items():
            commands.add_parser(name, help=f"{what} ({TOOLS_MISSING})")
        return top
    ksvc.add_parser(commands)
    bake.add_parsers(commands)
    return top


def tools_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("actionproxy.tools") is not None


def _error(message: str) -> None:
    """Through the proxy's logger, imported only now: `logging` would delay the stem cell."""
    from actionproxy.diagnostics import log

    log.error(message)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in TOOLS and not tools_installed():
        _error(f"{argv[0]}: {TOOLS_MISSING}")
        return 2
    local = "--local" in argv or any(a == "--source" or a.startswith("--source=") for a in argv)
    if argv[:1] == ["build"] and not local:  # --source DIR is a local folder: bake.run_build's branch
        from actionproxy.tools.tekton.cli import run as run_cluster_build  # kubernetes is imported lazily there

        return run_cluster_build(argv[1:])
    args = serve_parser().parse_args(argv[1:]) if argv[:1] == ["serve"] else parser().parse_args(argv)
    if args.command == "ksvc":
        from actionproxy.tools.ksvc import run

        return run(args)
    if args.command in ("bake", "build"):
        from actionproxy.tools import bake

        return bake.run_bake(args) if args.command == "bake" else bake.run_build(args)
    if args.command in ("run", "invoke"):
        from actionproxy import invoke

        return invoke.run_here(args) if args.command == "run" else invoke.invoke(args)
    if args.watch and args.init is None:
        _error("--watch needs --init FILE: it reloads that file")
        return 2
    become_init_if_pid1()
    try:
        config = Config.from_env(args.runtime, args.port, platform=args.platform,
                                 init_file=args.init, init_main=args.main)
    except ValueError as exc:
        _error(str(exc))
        return 2
    if config.debug:  # before the stem cell: its debugger check may have something to say
        from actionproxy.diagnostics import set_debug

        set_debug(True)
    from actionproxy.watch import inherited_socket

    sock = inherited_socket()
    if sock is None:
        try:
            sock = bind(config.host, config.port)
        except (OSError, OverflowError) as exc:  # OverflowError: a $PORT past 65535
            _error(f"cannot listen on {config.host}:{config.port}: {exc}")
            return 1
    if args.watch:
        from actionproxy.watch import watch

        return watch([a for a in argv if a != "--watch"], sock, args.init)
    from actionproxy.executor.stemcell import spawn_stem_cell, worker_socket_path

    socket_path = worker_socket_path()
    stem = spawn_stem_cell(config, socket_path) if config.launcher is not None else None
    from actionproxy.http import serverside

    serverside.install()  # before anything imports aiohttp
    from actionproxy.http.serving import serve

    serve(config, sock, stem, socket_path)
    return 0
