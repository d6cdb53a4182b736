"""Issue 15: without an OTLP endpoint there is no tracing at all: no SDK provider, no
instrumentation, and the helpers that carry trace context through the queue do nothing."""

from __future__ import annotations

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from adapters.tracing import current_traceparent, link_queued, parse_traceparent
from servers import tracing
from servers.config import Settings

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_without_an_endpoint_nothing_is_installed() -> None:
    server = grpc.aio.server
    assert tracing.install(Settings(), "tracker-query") is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    assert grpc.aio.server is server  # no interceptor patched in
    assert current_traceparent() is None
    assert link_queued([TP]) == 0


def test_traceparents_are_parsed_strictly() -> None:
    ctx = parse_traceparent(TP)
    assert ctx is not None
    assert (ctx.trace_id, ctx.span_id) == (0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7)
    assert ctx.trace_flags.sampled
    for bad in ("", "00-zz-00f067aa0ba902b7-01", f"00-{'0' * 32}-00f067aa0ba902b7-01", "a-b-c"):
        assert parse_traceparent(bad) is None
