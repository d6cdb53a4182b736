"""OpenTelemetry tracing of a process: on when an OTLP endpoint is configured
(``OTEL_EXPORTER_OTLP_ENDPOINT``), absent otherwise (no SDK, no instrumentation, no-op spans).

On: gRPC servers and clients, asyncpg, Redis and aiohttp (the Find My HTTP calls, ours and
``findmy``'s) are instrumented; spans go out in batches over OTLP/gRPC. Sampling follows the
caller's decision, else ``OTEL_TRACES_SAMPLER_ARG``. The rest of the ``OTEL_*`` variables
(headers, timeouts, batch sizes) are read by the SDK itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from servers.config import Settings

log = logging.getLogger("tracker.tracing")


@dataclass
class Tracing:
    provider: TracerProvider

    def shutdown(self) -> None:
        """Export what is left, then stop."""
        self.provider.shutdown()


def install(
    settings: Settings, component: str, exporter: SpanExporter | None = None
) -> Tracing | None:
    """Tracing for this process, or None when no endpoint (and no ``exporter``) is given."""
    t = settings.telemetry
    if exporter is None:
        if not t.otlp_endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = t.otlp_endpoint
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
    provider = TracerProvider(
        resource=Resource.create({"service.name": t.service_name or component}),
        sampler=ParentBased(TraceIdRatioBased(t.sampler_arg)),
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument()
    log.info(
        "tracing on",
        extra={"endpoint": t.otlp_endpoint, "sampled": t.sampler_arg},
    )
    return Tracing(provider)


def _instrument() -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
    )
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    # the server interceptor goes first: our interceptors (metrics, access log, errors,
    # auth) and the servicers run inside the call's span, so their log lines carry it
    GrpcAioInstrumentorServer().instrument()
    GrpcAioInstrumentorClient().instrument()
    AsyncPGInstrumentor().instrument()
    RedisInstrumentor().instrument()
    AioHttpClientInstrumentor().instrument()
