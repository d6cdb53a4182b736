"""Trace context carried with queued work (W3C ``traceparent`` strings), so that the span
that processes the work links to the trace that queued it. Without a tracer provider
(tracing off) every span is a no-op: nothing is stored and nothing is linked."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager

from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags

MAX_LINKS = 128  # the SDK's default limit of links per span


def current_traceparent() -> str | None:
    """The active span as a ``traceparent``, if it is recorded (sampled)."""
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: str) -> SpanContext | None:
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        ctx = SpanContext(
            int(parts[1], 16),
            int(parts[2], 16),
            is_remote=True,
            trace_flags=TraceFlags(int(parts[3], 16) & 0xFF),
        )
    except ValueError:
        return None
    return ctx if ctx.is_valid else None


def link_queued(traceparents: Iterable[str]) -> int:
    """Link the active span to the traces that queued the work it takes; returns links made."""
    span = trace.get_current_span()
    if not span.is_recording():
        return 0
    seen: set[str] = set()
    for value in traceparents:
        if value in seen or len(seen) >= MAX_LINKS:
            continue
        ctx = parse_traceparent(value)
        if ctx is not None:
            seen.add(value)
            span.add_link(ctx, {"tracker.link": "queued"})
    return len(seen)


class OpenTelemetryTracer:
    """``Tracer`` on OpenTelemetry's global tracer provider (no-op spans while tracing is
    off)."""

    def __init__(self, name: str = "tracker") -> None:
        self._tracer = trace.get_tracer(name)

    def span(self, name: str) -> AbstractContextManager[object]:
        return self._tracer.start_as_current_span(name)
