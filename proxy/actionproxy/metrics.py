"""Counters for `GET /metrics`, in Prometheus' text format, written by hand.

The runner updates them once per activation (a dict increment, a bisect into the bucket
bounds, an add), with no lock: everything runs on one event loop. Process figures (CPU, RSS)
are read with psutil only when the metrics are scraped.

How an activation's outcome is read from its answer (`outcome`):
- 200 whose body is an object with a top-level `error`: `application_error` (in a result over
  8 KiB the key is looked for in the first and last 4 KiB only, so that a large result costs
  no more than a small one);
- other 200: `success`;
- 429 (in-flight cap) and 503 (draining): `rejected` (it never ran);
- the deadline error (502 "The action did not finish by its deadline ..."): `timeout`;
- 500 (a fault of the proxy's own, or `/run` before any `/init`): `internal_error`;
- a streamed run stopped because its client left: `client_left`;
- any other 4xx/5xx (the action crashed, exited, ran out of memory, returned no object,
  could not start): `developer_error`.
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left

import orjson

from actionproxy import errors
from actionproxy.activation import ActivationResult
from actionproxy.executor.process import stat_fields

OUTCOMES = ("success", "application_error", "developer_error", "internal_error", "timeout", "rejected",
            "client_left")
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DEADLINE = orjson.dumps({"error": errors.DEADLINE_PASSED})[:-2]  # the message's start, as sent
_ERROR_KEY = b'"error"'
_EDGE = 4096  # bytes at each end of a large result where a top-level "error" is looked for


def _mentions_error(body: bytes) -> bool:
    size = len(body)
    if size <= 2 * _EDGE:
        return body.find(_ERROR_KEY) >= 0
    return body.find(_ERROR_KEY, 0, _EDGE) >= 0 or body.find(_ERROR_KEY, size - _EDGE) >= 0


def outcome(result: ActivationResult) -> str:
    status, body = result.status, result.body
    if status == 200:
        # a bounded substring scan; only a body that mentions "error" is parsed
        if body[:1] == b"{" and _mentions_error(body):
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError:
                return "success"
            if isinstance(parsed, dict) and "error" in parsed:
                return "application_error"
        return "success"
    if status == 429 or status == 503:
        return "rejected"
    if status == 502 and body.startswith(_DEADLINE):
        return "timeout"
    if status == 500:
        return "internal_error"
    if status == 499:  # a streamed run stopped when its client left (errors.client_left)
        return "client_left"
    return "developer_error"


def _process_start_boottime(pid: int | str) -> float:
    """When a process started, in CLOCK_BOOTTIME seconds (the kernel's own record, 10 ms ticks)."""
    return int(stat_fields(pid)[19]) / os.sysconf("SC_CLK_TCK")


def seconds_since_start() -> float:
    """Age of this process; when it was forked by our own PID 1 init (same command line, see
    pid1.py), age of the container's first process, which is where a cold start begins."""
    try:
        pid: int | str = "self"
        if os.getpid() != 1 and os.getppid() == 1:
            with open("/proc/1/cmdline", "rb") as init, open("/proc/self/cmdline", "rb") as me:
                if init.read() == me.read():
                    pid = 1
        return time.clock_gettime(time.CLOCK_BOOTTIME) - _process_start_boottime(pid)
    except (OSError, ValueError, IndexError):
        import psutil

        return time.time() - psutil.Process().create_time()


class ProxyMetrics:
    """Activation counters and the start-up figures; `render` adds what is sampled on scrape."""

    __slots__ = ("outcomes", "buckets", "duration_sum", "init_seconds", "cold_start_seconds", "_cpu_seen")

    def __init__(self) -> None:
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.buckets = [0] * (len(BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.duration_sum = 0.0
        self.init_seconds: float | None = None
        self.cold_start_seconds: float | None = None
        self._cpu_seen = 0.0

    # ------------------------------------------------------------------ updates
    def count(self, result: ActivationResult) -> ActivationResult:
        """An answer given without running anything (refused, not initialized)."""
        self.outcomes[outcome(result)] += 1
        return result

    def activation(self, result: ActivationResult, seconds: float) -> None:
        self.outcomes[outcome(result)] += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.duration_sum += seconds

    def mark_ready(self) -> None:
        """The first time the proxy can take work: the cold start ends here."""
        if self.cold_start_seconds is None:
            self.cold_start_seconds = seconds_since_start()

    # ------------------------------------------------------------------ exposition
    def render(self, inflight: int, launcher_restarts: int, memory_kills: int) -> bytes:
        lines: list[str] = []

        def metric(name: str, kind: str, doc: str, samples: list[tuple[str, float | int]]) -> None:
            lines.append(f"# HELP {name} {doc}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        metric("actionproxy_activations_total", "counter",
               "Activations by outcome (success, application_error, developer_error, internal_error, "
               "timeout, rejected, client_left).",
               [(f'{{outcome="{name}"}}', count) for name, count in self.outcomes.items()])
        cumulative, samples = 0, []
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets):
            cumulative += count
            samples.append((f'_bucket{{le="{_number(bound)}"}}', cumulative))
        samples += [("_sum", self.duration_sum), ("_count", cumulative)]
        metric("actionproxy_activation_duration_seconds", "histogram",
               "Time from admission to answer of every activation that was admitted.", samples)
        metric("actionproxy_activations_in_flight", "gauge", "Activations running now.", [("", inflight)])
        if self.init_seconds is not None:
            metric("actionproxy_init_duration_seconds", "gauge", "Duration of the last init.",
                   [("", self.init_seconds)])
        if self.cold_start_seconds is not None:
            metric("actionproxy_cold_start_seconds", "gauge",
                   "From the process start to the first moment the proxy could take work.",
                   [("", self.cold_start_seconds)])
        metric("actionproxy_launcher_restarts_total", "counter",
               "Launchers (and multiplexing executables) started again after they ended.",
               [("", launcher_restarts)])
        metric("actionproxy_memory_kills_total", "counter",
               "Processes of the action killed for going over the memory limit.", [("", memory_kills)])
        proxy_cpu, proxy_rss, runtime_cpu, runtime_rss = self._sample()
        metric("actionproxy_runtime_cpu_seconds_total", "counter",
               "CPU (user + system) used by every process the proxy started, and theirs, ended ones included.",
               [("", runtime_cpu)])
        metric("actionproxy_runtime_memory_bytes", "gauge",
               "Resident memory of every process the proxy started, and theirs (sum of RSS).",
               [("", runtime_rss)])
        metric("actionproxy_proxy_cpu_seconds_total", "counter", "CPU (user + system) of the proxy itself.",
               [("", proxy_cpu)])
        metric("actionproxy_proxy_memory_bytes", "gauge", "Resident memory of the proxy itself.",
               [("", proxy_rss)])
        lines.append("")
        return "\n".join(lines).encode()

    def _sample(self) -> tuple[float, int, float, int]:
        """(proxy CPU, proxy RSS, runtime CPU, runtime RSS). Runtime CPU = the live descendants'
        own and reaped-children times, plus the proxy's reaped children's; kept monotonic."""
        import psutil

        me = psutil.Process()
        with me.oneshot():
            times = me.cpu_times()
            proxy_rss = me.memory_info().rss
            descendants = me.children(recursive=True)
        runtime_cpu = times.children_user + times.children_system
        runtime_rss = 0
        for proc in descendants:
            try:
                with proc.oneshot():
                    t = proc.cpu_times()
                    runtime_rss += proc.memory_info().rss
                runtime_cpu += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass  # ended between the listing and the reading: its time is its parent's now
        self._cpu_seen = max(self._cpu_seen, runtime_cpu)
        return times.user + times.system, proxy_rss, self._cpu_seen, runtime_rss


def _number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if value == float("inf"):
        return "+Inf"
    return repr(value)
