"""Starting a language launcher before `/init`: import-light, so the CLI can call it first."""

from __future__ import annotations

import os
import tempfile

from actionproxy import __version__
from actionproxy.config import Config
from actionproxy.executor.process import SpawnedProcess, spawn


def launcher_argv(config: Config) -> list[str]:
    if config.runtime == "python":
        return [config.python, "-u", str(config.launcher)]
    if config.runtime == "nodejs":
        return [config.node, str(config.launcher)]
    raise ValueError(f"the {config.runtime} runtime has no launcher")


def worker_socket_path() -> str:
    """Where forked workers connect back to the proxy (a private folder of its own)."""
    return os.path.join(tempfile.mkdtemp(prefix="actionproxy-sock-"), "workers.sock")


def spawn_stem_cell(config: Config, socket_path: str) -> SpawnedProcess:
    """A launcher that imports its runtime, acks, and waits for INIT."""
    env = dict(os.environ)
    env["__OW_WAIT_FOR_ACK"] = "1"
    env["__OW_PROXY_VERSION"] = __version__
    env["ACTIONPROXY_WORKER_SOCKET"] = socket_path
    return spawn(launcher_argv(config), env)
