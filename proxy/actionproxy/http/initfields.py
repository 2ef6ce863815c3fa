"""The fields of an init (`value` of OpenWhisk's /init, `init` of a Knative envelope), checked
once for both platforms: a field of the wrong type is a 400 naming it, never a crash later."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from actionproxy import errors
from actionproxy.activation import ActivationResult


@dataclass(frozen=True)
class InitFields:
    code: str | None
    binary: bool
    main: str
    env: dict[str, str]


def parse_init(value: dict) -> InitFields | ActivationResult:
    code, binary, main, env = (value.get(k) for k in ("code", "binary", "main", "env"))
    if not isinstance(code, (str, type(None))):
        return _wrong("code", "a string")
    if not isinstance(binary, (bool, type(None))):
        return _wrong("binary", "a boolean")
    if not isinstance(main, (str, type(None))):
        return _wrong("main", "a string")
    if not isinstance(env, (dict, type(None))):
        return _wrong("env", "an object")
    return InitFields(code, bool(binary), main or "main", env_strings(env or {}))


def env_strings(env: dict) -> dict[str, str]:
    """Env values as the action sees them: strings as they are, null as "", others as compact JSON."""
    return {str(k): v if isinstance(v, str) else ("" if v is None else orjson.dumps(v).decode())
            for k, v in env.items()}


def _wrong(field: str, kind: str) -> ActivationResult:
    return errors.error(400, f"Error unmarshaling request: '{field}' must be {kind}")
