"""Issue 15: trace context travels with queued work. Reports stored inside a recorded span
leave its ``traceparent`` with the tracker's processing-queue row (migration 0022); the span
that claims the row links to it. Spans come from a tracer provider of the test's own (not
the process-wide one), so nothing else in this process is traced."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.integration.conftest import Stack
from tests.integration.test_processing import HAMBURG_WAREHOUSE, T0, make_world, rep

pytestmark = pytest.mark.integration


async def test_the_claiming_span_links_to_the_spans_that_stored_the_reports(stack: Stack) -> None:
    world = await make_world(stack)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    a, b = await world.tracker(), await world.tracker()

    stored = []
    for tracker in (a, a, b):  # two calls for a, one for b
        with tracer.start_as_current_span("ingest") as span:
            n = await world.store(
                [rep(tracker, T0 + timedelta(hours=len(stored)), HAMBURG_WAREHOUSE)]
            )
            assert n == 1
            stored.append(span.get_span_context())
    # stored outside any span (tracing off): nothing noted, no link
    await world.store([rep(b, T0 + timedelta(hours=5), HAMBURG_WAREHOUSE)])

    assert world.stack.container is not None
    queue = await world.stack.container.processing_queue.async_()
    with tracer.start_as_current_span("worker batch") as batch:
        claims = await queue.claim(uuid.uuid4(), 10, 60.0)
    assert {c.tracker_id for c in claims} == {a, b}
    links = {(link.context.trace_id, link.context.span_id) for link in batch.links}
    assert links == {(c.trace_id, c.span_id) for c in stored}
