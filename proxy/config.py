"""One typed, frozen configuration, read once from the environment (README lists every variable)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

RUNTIMES = ("python", "nodejs", "blackbox")
LAUNCHERS = {"python": "launcher.py", "nodejs": "launcher.js"}  # blackbox runs executables only
BLACKBOX_MODES = ("exec", "loop")
MiB = 1024 * 1024


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {raw!r}")
    return value


def _runtimes_dir() -> Path:
    """The launchers ship in `runtimes/` next to the package source (repo or image)."""
    return Path(__file__).resolve().parent.parent / "runtimes"


def _memory_limit(env: dict[str, str]) -> int | None:
    """ACTIONPROXY_MEMORY_LIMIT (bytes, 0 = off), else 90% of the container's cgroup limit:
    the proxy acts before the kernel's OOM killer picks a victim, which may be the proxy."""
    if env.get("ACTIONPROXY_MEMORY_LIMIT"):
        return _int(env, "ACTIONPROXY_MEMORY_LIMIT", 0) or None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = Path(path).read_text().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 1 << 60:
            return int(raw) * 9 // 10
        return None
    return None


@dataclass(frozen=True)
class Config:
    runtime: str
    port: int
    host: str
    action_dir: Path
    preinstalled_exec: Path
    runtimes_dir: Path
    python: str
    node: str
    blackbox_mode: str
    memory_limit: int | None
    max_concurrent: int
    max_workers: int
    log_format: str
    log_limit: int
    max_body: int
    max_archive: int
    wait_for_ack: bool
    cancel_grace: float

    @property
    def launcher(self) -> Path | None:
        name = LAUNCHERS.get(self.runtime)
        return None if name is None else self.runtimes_dir / self.runtime / name

    @classmethod
    def from_env(cls, runtime: str, port: int | None = None,
                 env: dict[str, str] | None = None) -> "Config":
        env = dict(os.environ) if env is None else env
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if port is None:
            port = _int(env, "PORT", 8080)
        runtimes = Path(env.get("ACTIONPROXY_RUNTIMES_DIR") or _runtimes_dir())
        action_dir = env.get("ACTIONPROXY_ACTION_DIR") or tempfile.mkdtemp(prefix="actionproxy-")
        blackbox_mode = env.get("ACTIONPROXY_BLACKBOX_MODE", "exec") or "exec"
        if blackbox_mode not in BLACKBOX_MODES:
            raise ValueError(f"ACTIONPROXY_BLACKBOX_MODE must be 'exec' or 'loop', not {blackbox_mode!r}")
        log_format = env.get("ACTIONPROXY_LOG_FORMAT", "sentinel") or "sentinel"
        if log_format not in ("sentinel", "json"):
            raise ValueError(f"ACTIONPROXY_LOG_FORMAT must be 'sentinel' or 'json', not {log_format!r}")
        return cls(
            runtime=runtime,
            port=port,
            host=env.get("ACTIONPROXY_HOST", "0.0.0.0") or "0.0.0.0",
            action_dir=Path(action_dir),
            preinstalled_exec=Path(env.get("ACTIONPROXY_EXEC") or Path(action_dir) / "exec"),
            runtimes_dir=runtimes,
            python=env.get("ACTIONPROXY_PYTHON") or shutil.which("python3") or "python3",
            node=env.get("ACTIONPROXY_NODE") or shutil.which("node") or "node",
            blackbox_mode=blackbox_mode,
            memory_limit=_memory_limit(env),
            max_concurrent=_int(env, "ACTIONPROXY_MAX_CONCURRENT", 10000) or 10000,
            max_workers=_int(env, "ACTIONPROXY_MAX_WORKERS", 32) or 1,
            log_format=log_format,
            log_limit=_int(env, "ACTIONPROXY_LOG_LIMIT", 10 * MiB),
            max_body=_int(env, "ACTIONPROXY_MAX_BODY", 80 * MiB),
            max_archive=_int(env, "ACTIONPROXY_MAX_ARCHIVE", 512 * MiB),
            wait_for_ack=bool(env.get("OW_WAIT_FOR_ACK")),
            cancel_grace=_int(env, "ACTIONPROXY_CANCEL_GRACE_MS", 2000) / 1000,
        )
