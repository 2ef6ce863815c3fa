"""One OpenTelemetry span per activation, exported over OTLP/HTTP (JSON encoding) when
`OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set.

Nothing of this is imported unless an endpoint is set. No OpenTelemetry SDK: a span is one
small JSON object, and the SDK's import would cost the cold start more than the whole proxy.
Spans are queued by the event loop (no I/O there) and posted in batches by one thread, every
EXPORT_EVERY seconds or BATCH spans, and once more when the proxy closes. A collector that is
down costs a log line per failed batch, never an activation: a full queue drops spans.

Only sampled spans are exported: those of a caller whose traceparent says sampled, and those
of traces the proxy starts (flagged sampled when an exporter is set).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.request
from typing import Any

from actionproxy.diagnostics import log
from actionproxy.tracecontext import Trace

BATCH = 512
EXPORT_EVERY = 1.0  # seconds
MAX_QUEUED = 8192  # spans waiting at most; more are dropped
TIMEOUT = 10.0  # seconds a post may take (OTEL_EXPORTER_OTLP_TIMEOUT's default)
SPAN_SERVER = 2  # SpanKind.SPAN_KIND_SERVER
STATUS_OK, STATUS_ERROR = 1, 2


def endpoint(env: dict[str, str]) -> str | None:
    """The traces URL from the standard variables, or None: no export."""
    traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def headers(raw: str) -> dict[str, str]:
    """`OTEL_EXPORTER_OTLP_HEADERS`: comma-separated key=value pairs, values percent-decoded."""
    from urllib.parse import unquote

    pairs = (item.partition("=") for item in raw.split(",") if "=" in item)
    return {key.strip(): unquote(value.strip()) for key, _, value in pairs}


def _attribute(key: str, value: str | int) -> dict[str, Any]:
    kind = "intValue" if isinstance(value, int) else "stringValue"
    return {"key": key, "value": {kind: str(value) if kind == "intValue" else value}}


class SpanExporter:
    def __init__(self, url: str, env: dict[str, str]) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/json",
                        **headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS", ""))}
        service = env.get("OTEL_SERVICE_NAME") or env.get("K_SERVICE") or env.get("__OW_ACTION_NAME") or "actionproxy"
        self.resource = {"attributes": [_attribute("service.name", service),
                                        _attribute("telemetry.sdk.name", "actionproxy")]}
        self.name = env.get("__OW_ACTION_NAME") or service
        self._queue: queue.Queue[dict | None] = queue.Queue(MAX_QUEUED)
        self._thread = threading.Thread(target=self._export_loop, name="otlp-export", daemon=True)
        self._thread.start()

    def add(self, trace: Trace, activation_id: str, start_ns: int, end_ns: int, status: int, error: bool) -> None:
        """Queue the activation's span (sampled ones only)."""
        if not int(trace.flags, 16) & 1:
            return
        span = {"traceId": trace.trace_id, "spanId": trace.span_id, "name": self.name, "kind": SPAN_SERVER,
                "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(end_ns),
                "attributes": [_attribute("faas.invocation_id", activation_id), _attribute("http.response.status_code", status)],
                "status": {"code": STATUS_ERROR if error else STATUS_OK}}
        if trace.parent_id:
            span["parentSpanId"] = trace.parent_id
        if trace.state:
            span["traceState"] = trace.state
        try:
            self._queue.put_nowait(span)
        except queue.Full:
            pass

    def close(self) -> None:
        """Export what is queued, then stop (bounded by TIMEOUT)."""
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            return
        self._thread.join(TIMEOUT)

    def _export_loop(self) -> None:
        while True:
            batch: list[dict] = []
            deadline = time.monotonic() + EXPORT_EVERY
            closing = False
            while len(batch) < BATCH:
                try:
                    span = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if span is None:
                    closing = True
                    break
                batch.append(span)
            if batch:
                self._post(batch)
            if closing:
                return

    def _post(self, spans: list[dict]) -> None:
        body = json.dumps({"resourceSpans": [{"resource": self.resource, "scopeSpans": [
            {"scope": {"name": "actionproxy"}, "spans": spans}]}]}).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                response.read()
        except OSError as exc:  # URLError and HTTPError are OSErrors
            log.warning(f"OTLP export of {len(spans)} span(s) to {self.url} failed: {exc}")


def from_env(env: dict[str, str]) -> SpanExporter | None:
    url = endpoint(env)
    if url is None:
        return None
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/json"
    if protocol != "http/json":
        log.warning(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: actionproxy exports spans as http/json only")
    return SpanExporter(url, env)
