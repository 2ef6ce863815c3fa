"""One typed, frozen configuration, read once from the environment (README lists every variable)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

RUNTIMES = ("python", "nodejs", "blackbox")
PLATFORMS = ("openwhisk", "knative")
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
LAUNCHERS = {"python": "launcher.py", "nodejs": "launcher.js"}  # blackbox runs executables only
BLACKBOX_MODES = ("exec", "loop", "http")
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


def _flag(env: dict[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _runtimes_dir() -> Path:
    """The launchers ship inside the package (package data), so an installed wheel finds them
    wherever it runs. Found beside this file rather than with importlib.resources, which costs
    20 ms of every cold start to say the same for a package installed as files (pip's way)."""
    return Path(__file__).resolve().parent / "launchers"


PARAM_PREFIX = "ACTIONPROXY_PARAM_"


def _http_methods(raw: str) -> tuple[str, ...]:
    """`__OW_HTTP_METHODS` as OpenWhisk writes it, "[GET,POST]"; POST when unset."""
    methods = tuple(m.strip().upper() for m in raw.strip().strip("[]").split(",") if m.strip())
    unknown = [m for m in methods if m not in HTTP_METHODS]
    if unknown:
        raise ValueError(f"__OW_HTTP_METHODS: unsupported method(s) {', '.join(unknown)}")
    return methods or ("POST",)


@dataclass(frozen=True)
class AutoInit:
    """The action a dedicated container loads at start-up instead of waiting for `/init`:
    OW_AUTOINIT (a file, folder or zip in the image) or, for compatibility with OpenWhisk's
    Knative images, __OW_ACTION_CODE (source, or a base64 archive with __OW_ACTION_BINARY)."""

    path: Path | None
    code: str | None
    binary: bool
    main: str

    @classmethod
    def from_env(cls, env: dict[str, str], init_file: Path | None, init_main: str) -> "AutoInit | None":
        if init_file is not None:
            return cls(init_file, None, False, init_main)
        if env.get("OW_AUTOINIT"):
            return cls(Path(env["OW_AUTOINIT"]), None, False, env.get("OW_AUTOINIT_MAIN") or "main")
        if env.get("__OW_ACTION_CODE"):
            return cls(None, env["__OW_ACTION_CODE"], env.get("__OW_ACTION_BINARY", "").lower() == "true",
                       env.get("__OW_ACTION_MAIN") or "main")
        return None


@dataclass(frozen=True)
class ArchiveLimits:
    """How far extracting an action archive may go: bytes written (ACTIONPROXY_MAX_ARCHIVE),
    entries (ACTIONPROXY_MAX_ARCHIVE_ENTRIES) and seconds (ACTIONPROXY_MAX_ARCHIVE_SECONDS)."""

    size: int = 512 * MiB
    entries: int = 100_000
    seconds: float = 60.0


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


def _path(env: dict[str, str], name: str) -> str:
    path = env.get(name) or "/"
    if not path.startswith("/"):
        raise ValueError(f"{name} must be a path starting with '/', not {path!r}")
    return path


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
    archive: ArchiveLimits
    wait_for_ack: bool
    cancel_grace: float
    drain_seconds: float = 30.0
    launchers: int = 1  # async launchers (ACTIONPROXY_LAUNCHERS); sync mode forks workers instead
    debug: bool = False
    debug_port: int | None = None  # None: the runtime's usual inspector port
    platform: str = "openwhisk"
    http_methods: tuple[str, ...] = ("POST",)
    raw_http: bool = False
    autoinit: AutoInit | None = None
    params_file: Path | None = None
    env_params: tuple[tuple[str, str], ...] = ()
    header_timeout: float = 10.0  # seconds for a request head to arrive whole; 0: no limit
    body_timeout: float = 60.0  # seconds for a request body to arrive whole; 0: no limit
    app_path: str = "/"  # blackbox http mode: where /run's parameters are POSTed
    app_ready_path: str = "/"  # blackbox http mode: asked until the app answers
    app_start_seconds: float = 30.0  # blackbox http mode: how long the app may take to answer

    @property
    def launcher(self) -> Path | None:
        name = LAUNCHERS.get(self.runtime)
        return None if name is None else self.runtimes_dir / self.runtime / name

    @classmethod
    def from_env(cls, runtime: str, port: int | None = None,
                 env: dict[str, str] | None = None, platform: str | None = None,
                 init_file: Path | None = None, init_main: str = "main") -> "Config":
        env = dict(os.environ) if env is None else env
        platform = platform or env.get("__OW_RUNTIME_PLATFORM", "").lower() or "openwhisk"
        if platform not in PLATFORMS:
            raise ValueError(f"__OW_RUNTIME_PLATFORM ({platform}) is not supported: use openwhisk or knative")
        if runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if port is None:
            port = _int(env, "PORT", 8080)
        runtimes = Path(env.get("ACTIONPROXY_RUNTIMES_DIR") or _runtimes_dir())
        action_dir = env.get("ACTIONPROXY_ACTION_DIR") or tempfile.mkdtemp(prefix="actionproxy-")
        blackbox_mode = env.get("ACTIONPROXY_BLACKBOX_MODE", "exec") or "exec"
        if blackbox_mode not in BLACKBOX_MODES:
            raise ValueError(f"ACTIONPROXY_BLACKBOX_MODE must be 'exec', 'loop' or 'http', not {blackbox_mode!r}")
        # OpenWhisk reads activation logs by their sentinels; elsewhere JSON lines carry the id
        log_format = env.get("ACTIONPROXY_LOG_FORMAT") or ("sentinel" if platform == "openwhisk" else "json")
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
            archive=ArchiveLimits(_int(env, "ACTIONPROXY_MAX_ARCHIVE", 512 * MiB),
                                  _int(env, "ACTIONPROXY_MAX_ARCHIVE_ENTRIES", 100_000),
                                  float(_int(env, "ACTIONPROXY_MAX_ARCHIVE_SECONDS", 60))),
            wait_for_ack=bool(env.get("OW_WAIT_FOR_ACK")),
            cancel_grace=_int(env, "ACTIONPROXY_CANCEL_GRACE_MS", 2000) / 1000,
            drain_seconds=float(_int(env, "ACTIONPROXY_DRAIN_SECONDS", 30)),
            launchers=_int(env, "ACTIONPROXY_LAUNCHERS", 1) or 1,
            debug=_flag(env, "ACTIONPROXY_DEBUG") or _flag(env, "__OW_RUNTIME_DEBUG"),
            debug_port=_int(env, "ACTIONPROXY_DEBUG_PORT", 0) or None,
            platform=platform,
            http_methods=_http_methods(env.get("__OW_HTTP_METHODS", "")),
            raw_http=env.get("__OW_ACTION_RAW", "").lower() == "true",
            autoinit=AutoInit.from_env(env, init_file, init_main),
            params_file=Path(env["ACTIONPROXY_PARAMS_FILE"]) if env.get("ACTIONPROXY_PARAMS_FILE") else None,
            env_params=tuple(sorted((k[len(PARAM_PREFIX):], v) for k, v in env.items()
                                    if k.startswith(PARAM_PREFIX) and len(k) > len(PARAM_PREFIX))),
            header_timeout=float(_int(env, "ACTIONPROXY_HEADER_TIMEOUT", 10)),
            body_timeout=float(_int(env, "ACTIONPROXY_BODY_TIMEOUT", 60)),
            app_path=_path(env, "ACTIONPROXY_APP_PATH"),
            app_ready_path=_path(env, "ACTIONPROXY_APP_READY_PATH"),
            app_start_seconds=float(_int(env, "ACTIONPROXY_APP_START_SECONDS", 30) or 30),
        )
