"""Starting a language launcher before `/init`: import-light, so the CLI can call it first."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile

from actionproxy import __version__
from actionproxy.config import Config
from actionproxy.executor.process import SpawnedProcess, spawn


DEBUG_PORTS = {"python": 5678, "nodejs": 9229}  # debugpy's and Node's usual inspector ports


def launcher_argv(config: Config) -> list[str]:
    """The launcher's command; in debug mode (ACTIONPROXY_DEBUG) under the language's
    inspector, listening on ACTIONPROXY_DEBUG_PORT for a debugger to attach."""
    port = config.debug_port or DEBUG_PORTS.get(config.runtime)
    if config.runtime == "python":
        inspector = (["-m", "debugpy", "--listen", f"0.0.0.0:{port}"]
                     if config.debug and has_debugpy(config.python) else [])
        return [config.python, "-u", *inspector, str(config.launcher)]
    if config.runtime == "nodejs":
        inspector = [f"--inspect=0.0.0.0:{port}"] if config.debug else []
        return [config.node, *inspector, str(config.launcher)]
    raise ValueError(f"the {config.runtime} runtime has no launcher")


@functools.cache
def has_debugpy(python: str) -> bool:
    """Whether the launcher's interpreter (not necessarily the proxy's) can import debugpy;
    asked once, and said on stderr when it cannot."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('debugpy') is None)"
    try:
        found = subprocess.run([python, "-c", probe], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        found = False
    if not found:
        from actionproxy.diagnostics import log  # debug mode only: logging is not on the start path

        log.debug(f"debugpy is not installed for {python}, so the Python launcher runs without a "
                  f"debugger to attach to (pip install debugpy to get one)")
    return found


def proxy_environ() -> dict[str, str]:
    """The proxy's environment, for a child it starts, with the proxy's version as OpenWhisk's
    proxies announce it."""
    return {**os.environ, "__OW_PROXY_VERSION": __version__}


def worker_socket_path() -> str:
    """Where forked workers connect back to the proxy (a private folder of its own)."""
    return os.path.join(tempfile.mkdtemp(prefix="actionproxy-sock-"), "workers.sock")


def spawn_stem_cell(config: Config, socket_path: str) -> SpawnedProcess:
    """A launcher that imports its runtime, acks, and waits for INIT."""
    env = proxy_environ()
    env["__OW_WAIT_FOR_ACK"] = "1"
    env["ACTIONPROXY_WORKER_SOCKET"] = socket_path
    if config.runtime == "nodejs":  # where its launcher finds esbuild (TypeScript): beside the proxy
        env.setdefault("ACTIONPROXY_NODE_MODULES", os.path.join(sys.prefix, "node_modules"))
    # a dedicated image on one CPU: the action comes at once, so the launcher's prewarming of
    # the event loop would only take CPU from the proxy's start (a def main never needs it)
    single_cpu = len(os.sched_getaffinity(0)) == 1
    env["ACTIONPROXY_PREWARM"] = "0" if config.autoinit is not None and single_cpu else "1"
    return spawn(launcher_argv(config), env)
