"""Every error the proxy answers with, built in one place, with the exact reference strings.

The strings in quotes are the ones OpenWhisk's runtimes and conformance suite use
(spec sections a.3 and a.5); changing them breaks compatibility.
"""

from __future__ import annotations

import orjson

from actionproxy.activation import ActivationResult

MISSING_CODE = "Missing main/no code to execute."
REINIT = "Cannot initialize the action more than once."
NOT_INITIALIZED = "no action defined yet"
NOT_A_DICT = "The action did not return a dictionary or array."
BAD_ARGUMENT = "The action did not receive a dictionary or array as an argument."
COMPILE_FAILED = "The action failed to generate or locate a binary. See logs for details."
START_FAILED = "Cannot start action. Check logs for details."
EXITED_DURING_INIT = "Command exited abruptly during initialization."
COMMAND_EXITED = "command exited"
DEADLINE_PASSED = "The action did not finish by its deadline"
SHUTTING_DOWN = "The container is shutting down and takes no new work: send it to another container."
ENV_RULE = "an environment variable's name must be non-empty, without '=' or NUL, and its value without NUL"


def error(status: int, message: str) -> ActivationResult:
    return ActivationResult(status, orjson.dumps({"error": message}))


def bad_json(what: str, exc: Exception) -> ActivationResult:
    return error(400, f"The {what} body is not valid JSON: {exc}")


def cannot_decode(exc: Exception) -> ActivationResult:
    return error(400, f"cannot decode the request: {exc}")


def command_exited(detail: str) -> ActivationResult:
    return error(400, f"{COMMAND_EXITED} ({detail}); the action was restarted for later activations")


def unexportable_init_env(name: str) -> ActivationResult:
    return error(400, f"The /init env entry {name!r} cannot be exported: {ENV_RULE}.")


def unexportable_field(field: str, name: str) -> ActivationResult:
    """A one-shot executable gets the activation's context only in its environment."""
    return error(400, f"The activation field {field!r} cannot be passed to the executable as the "
                      f"environment variable {name!r}: {ENV_RULE}.")


def body_too_large(limit: int) -> ActivationResult:
    return error(413, f"The request body is larger than the limit of {limit} bytes (ACTIONPROXY_MAX_BODY).")


def head_timeout(seconds: float) -> ActivationResult:
    return error(408, f"The request head did not arrive whole within {seconds:g} s "
                      f"(ACTIONPROXY_HEADER_TIMEOUT); the connection is closed.")


def body_timeout(seconds: float) -> ActivationResult:
    return error(408, f"The request body did not arrive whole within {seconds:g} s "
                      f"(ACTIONPROXY_BODY_TIMEOUT); the connection is closed.")


def deadline_passed(killed: bool) -> ActivationResult:
    what = "its process was killed" if killed else "it was cancelled"
    return error(502, f"{DEADLINE_PASSED} and {what}.")


def client_left() -> ActivationResult:
    """What the proxy records for a run it stopped because its client went away."""
    return error(499, "The client closed the connection; the activation was stopped.")


def shutting_down() -> ActivationResult:
    """503: OpenWhisk's "container shutting down"; the invoker sends the activation elsewhere."""
    return error(503, SHUTTING_DOWN)


def stopped_at_shutdown(drain_seconds: float) -> ActivationResult:
    return error(502, f"The container shut down before the action finished: it was stopped at the end "
                      f"of the drain period ({drain_seconds:g} s, ACTIONPROXY_DRAIN_SECONDS).")


def too_many(limit: int) -> ActivationResult:
    return error(429, f"Too many activations in flight: this container accepts at most {limit} at once.")


def not_initialized() -> ActivationResult:
    return error(500, NOT_INITIALIZED)


def not_a_dict() -> ActivationResult:
    return error(502, NOT_A_DICT)
