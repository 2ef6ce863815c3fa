"""One typed, frozen configuration, read once from the environment (README lists every variable)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

RUNTIMES = ("python",)
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


@dataclass(frozen=True)
class Config:
    runtime: str
    port: int
    host: str
    action_dir: Path
    launcher: Path
    python: str
    max_concurrent: int
    max_workers: int
    log_format: str
    log_limit: int
    max_body: int
    max_archive: int
    wait_for_ack: bool
    cancel_grace: float

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
        log_format = env.get("ACTIONPROXY_LOG_FORMAT", "sentinel") or "sentinel"
        if log_format not in ("sentinel", "json"):
            raise ValueError(f"ACTIONPROXY_LOG_FORMAT must be 'sentinel' or 'json', not {log_format!r}")
        return cls(
            runtime=runtime,
            port=port,
            host=env.get("ACTIONPROXY_HOST", "0.0.0.0") or "0.0.0.0",
            action_dir=Path(action_dir),
            launcher=runtimes / runtime / "launcher.py",
            python=env.get("ACTIONPROXY_PYTHON") or shutil.which("python3") or "python3",
            max_concurrent=_int(env, "ACTIONPROXY_MAX_CONCURRENT", 10000) or 10000,
            max_workers=_int(env, "ACTIONPROXY_MAX_WORKERS", 32) or 1,
            log_format=log_format,
            log_limit=_int(env, "ACTIONPROXY_LOG_LIMIT", 10 * MiB),
            max_body=_int(env, "ACTIONPROXY_MAX_BODY", 80 * MiB),
            max_archive=_int(env, "ACTIONPROXY_MAX_ARCHIVE", 512 * MiB),
            wait_for_ack=bool(env.get("OW_WAIT_FOR_ACK")),
            cancel_grace=_int(env, "ACTIONPROXY_CANCEL_GRACE_MS", 2000) / 1000,
        )
