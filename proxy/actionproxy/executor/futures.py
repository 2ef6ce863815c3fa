"""Resolving a future that may already be resolved: the waiter may have gone (its HTTP request
was cancelled, its deadline passed) or another path may have answered first."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # spawning the stem cell (process.py) must not import the event loop
    import asyncio

T = TypeVar("T")


def settle(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)
