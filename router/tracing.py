"""W3C trace context: accepted from clients, propagated to upstreams, and spans
when OpenTelemetry is installed and `tracing.enabled` is set.

Without OpenTelemetry (or with tracing off) the cost is one header parse: a
valid `traceparent` from the client travels on to every upstream attempt with
the same trace id and a fresh parent id (this hop), `tracestate` unchanged.
With it, the request, the selection and each upstream attempt are spans,
exported in batches over OTLP/HTTP (5 s timeout, 512 spans a batch, as the
seed suggests, both configurable).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from router.core.model import Tracing

log = logging.getLogger("goproxy_router.tracing")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_TRACESTATE = re.compile(r"^[\x20-\x7e]{0,512}$")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str
    parent_id: str
    flags: str
    tracestate: str | None = None

    def headers(self, span_id: str) -> dict[str, str]:
        out = {"traceparent": f"00-{self.trace_id}-{span_id}-{self.flags}"}
        if self.tracestate:
            out["tracestate"] = self.tracestate
        return out


def parse(headers: Mapping[str, str]) -> TraceContext | None:
    """The client's trace context, if its `traceparent` is valid (else None)."""
    raw = headers.get("traceparent")
    if not raw:
        return None
    match = _TRACEPARENT.match(raw.strip().lower())
    if match is None:
        return None
    trace_id, parent_id, flags = match.groups()
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    state = headers.get("tracestate")
    if state is not None and not _TRACESTATE.match(state):
        state = None
    return TraceContext(trace_id, parent_id, flags, state)


def new_span_id() -> str:
    return os.urandom(8).hex()


class Tracer:
    """Spans for one process; the base class only propagates (no spans)."""

    enabled = False

    @contextlib.contextmanager
    def request(
        self, ctx: TraceContext | None, name: str, attrs: Mapping[str, Any]
    ) -> Iterator[TraceContext | None]:
        yield ctx

    @contextlib.contextmanager
    def span(self, ctx: TraceContext | None, name: str, attrs: Mapping[str, Any]) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def attempt(self, ctx: TraceContext | None, upstream: str) -> Iterator[dict[str, str]]:
        """Headers to send upstream for one attempt."""
        yield ctx.headers(new_span_id()) if ctx is not None else {}

    def shutdown(self) -> None:
        pass


class OtelTracer(Tracer):
    """Spans through the OpenTelemetry SDK (an optional dependency)."""

    enabled = True

    def __init__(self, cfg: Tracing) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

        self._trace = trace
        provider = TracerProvider(
            resource=Resource.create({"service.name": cfg.service_name}),
            sampler=ParentBasedTraceIdRatio(cfg.sample),
        )
        exporter = OTLPSpanExporter(endpoint=cfg.endpoint, timeout=int(cfg.export_timeout))
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_export_batch_size=cfg.batch_size,
                export_timeout_millis=int(cfg.export_timeout * 1000),
            )
        )
        self.provider = provider
        self._tracer = provider.get_tracer("goproxy-router")

    def _parent(self, ctx: TraceContext | None) -> Any:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        if ctx is None:
            return None
        carrier = ctx.headers(ctx.parent_id)
        return TraceContextTextMapPropagator().extract(carrier)

    @contextlib.contextmanager
    def request(
        self, ctx: TraceContext | None, name: str, attrs: Mapping[str, Any]
    ) -> Iterator[TraceContext | None]:
        kind = self._trace.SpanKind.SERVER
        with self._tracer.start_as_current_span(
            name, context=self._parent(ctx), kind=kind, attributes=dict(attrs)
        ) as span:
            sc = span.get_span_context()
            yield TraceContext(
                f"{sc.trace_id:032x}",
                f"{sc.span_id:016x}",
                f"{int(sc.trace_flags):02x}",
                ctx.tracestate if ctx else None,
            )

    @contextlib.contextmanager
    def span(self, ctx: TraceContext | None, name: str, attrs: Mapping[str, Any]) -> Iterator[None]:
        with self._tracer.start_as_current_span(name, attributes=dict(attrs)):
            yield

    @contextlib.contextmanager
    def attempt(self, ctx: TraceContext | None, upstream: str) -> Iterator[dict[str, str]]:
        kind = self._trace.SpanKind.CLIENT
        with self._tracer.start_as_current_span(
            "upstream", kind=kind, attributes={"goproxy.upstream": upstream}
        ) as span:
            sc = span.get_span_context()
            headers = {
                "traceparent": f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"
            }
            if ctx is not None and ctx.tracestate:
                headers["tracestate"] = ctx.tracestate
            yield headers

    def shutdown(self) -> None:
        self.provider.shutdown()


def make_tracer(cfg: Tracing) -> Tracer:
    """OpenTelemetry spans when enabled and installed, else propagation only."""
    if not cfg.enabled:
        return Tracer()
    try:
        return OtelTracer(cfg)
    except ImportError:
        log.warning(
            "tracing.enabled but OpenTelemetry is not installed: pip install "
            "'goproxy-router[otel]'; propagating trace context only"
        )
        return Tracer()
