"""What a process environment can carry (execve's rules): a name that is non-empty and has no
'=' or NUL, a value without NUL. /init env and the context of one-shot executables are checked
here first, so that such an entry is refused with a 400 naming it instead of failing in a spawn."""

from __future__ import annotations


def exportable(name: str, value: str) -> bool:
    return bool(name) and "=" not in name and "\0" not in name and "\0" not in value


def first_unexportable(env: dict[str, str]) -> str | None:
    """The name of the first entry the environment cannot carry, or None."""
    return next((name for name, value in env.items() if not exportable(name, value)), None)
