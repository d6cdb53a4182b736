"""Issue 15: one report's trace, from ``IngestReports`` on a collector process to the batch
of a worker process that processed it, linked through the processing queue; and every log
line of the call carrying the trace id and the caller.

Real processes (``tracker-collector``, ``tracker-worker``) export over OTLP/gRPC to a
receiver this test runs on loopback (``OTEL_EXPORTER_OTLP_ENDPOINT``), as they would to an
OpenTelemetry Collector."""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.conftest import REDIS_URL, process_env
from tests.integration.conftest import ADMIN_EMAIL, Stack, bearer_interceptors
from tests.integration.test_reports import report, tracker_in_new_run
from tests.ports import free_port
from tracker.v1 import report_service_pb2 as r
from tracker.v1 import report_service_pb2_grpc as r_grpc

pytestmark = pytest.mark.integration

BIN = pathlib.Path(sys.executable).parent
INGEST = "/tracker.v1.ReportService/IngestReports"


class Receiver(ts_grpc.TraceServiceServicer):
    """An OTLP trace receiver: remembers every span with its service.name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, trace_pb2.Span]] = []

    async def Export(
        self, request: ts.ExportTraceServiceRequest, context: Any
    ) -> ts.ExportTraceServiceResponse:
        for rs in request.resource_spans:
            service = next(
                (a.value.string_value for a in rs.resource.attributes if a.key == "service.name"),
                "",
            )
            for ss in rs.scope_spans:
                self.spans.extend((service, span) for span in ss.spans)
        return ts.ExportTraceServiceResponse()

    def of(self, service: str) -> list[trace_pb2.Span]:
        return [s for name, s in self.spans if name == service]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    server = grpc.aio.server()
    rec = Receiver()
    ts_grpc.add_TraceServiceServicer_to_server(rec, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield rec, port
    await server.stop(0)


async def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (found := check()):
            await asyncio.sleep(0.1)
    return found


async def test_a_reports_trace_runs_from_ingest_to_the_workers_batch_through_the_queue(
    stack: Stack, database_url: str, receiver: tuple[Receiver, int], tmp_path: pathlib.Path
) -> None:
    rec, otlp_port = receiver
    tracker = await tracker_in_new_run(stack)
    token = await stack.token_for(ADMIN_EMAIL)
    admin_id = (await stack.access.authenticate(token)).user_id
    collector_port = free_port()
    common = {
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_REDIS_URL": REDIS_URL,
        "TRACKER_HEALTH_PORT": "0",
        "TRACKER_METRICS_PORT": "0",
        "TRACKER_LOG_LEVEL": "debug",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("collector", "worker")}
    procs = []
    for name, extra in (
        ("collector", {"TRACKER_COLLECTOR_PORT": str(collector_port)}),
        ("worker", {"TRACKER_WORKER_IDLE_S": "0.2"}),
    ):
        with logs[name].open("wb") as out:
            procs.append(
                await asyncio.create_subprocess_exec(
                    str(BIN / f"tracker-{name}"),
                    env=process_env(**common, **extra),
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
    try:
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{collector_port}", interceptors=bearer_interceptors(token)
        ) as channel:
            await asyncio.wait_for(channel.channel_ready(), 60)
            now = datetime.now(UTC).replace(microsecond=0)
            answer = await r_grpc.ReportServiceStub(channel).IngestReports(
                iter(
                    [
                        r.IngestReportsRequest(
                            reports=[report(tracker, now - timedelta(minutes=5), 1)]
                        )
                    ]
                )
            )
            assert answer.stored_count == 1

        # the collector's server span of the call, and the database work inside its trace
        ingest = await eventually(
            lambda: [s for s in rec.of("tracker-collector") if s.name == INGEST]
        )
        assert len(ingest) == 1
        trace_id = ingest[0].trace_id
        assert ingest[0].kind == trace_pb2.Span.SPAN_KIND_SERVER
        in_trace = [s for s in rec.of("tracker-collector") if s.trace_id == trace_id]
        assert any(s.name.startswith(("INSERT", "COPY", "SELECT")) for s in in_trace), [
            s.name for s in in_trace
        ]

        # the worker's batch: another trace, linked to the call that stored the report
        def linked() -> list[trace_pb2.Span]:
            return [
                s
                for s in rec.of("tracker-worker")
                if s.name == "worker batch" and any(link.trace_id == trace_id for link in s.links)
            ]

        batch = (await eventually(linked))[0]
        assert batch.trace_id != trace_id
        link = next(link for link in batch.links if link.trace_id == trace_id)
        assert link.span_id in {s.span_id for s in in_trace}
        claimed = {a.key: a.value.int_value for a in batch.attributes}
        assert claimed["tracker.trackers"] == 1
        # its database work is in the batch's own trace
        assert any(
            s.trace_id == batch.trace_id and s.span_id != batch.span_id
            for s in rec.of("tracker-worker")
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            await asyncio.wait_for(proc.wait(), 30)

    # every log line of the call carries its trace id and its caller; the access line too
    hex_trace = trace_id.hex()
    lines = [json.loads(x) for x in logs["collector"].read_text().splitlines() if x.startswith("{")]
    of_call = [x for x in lines if x.get("trace_id") == hex_trace]
    assert of_call, "no log line carries the call's trace id"
    access = [x for x in of_call if x["event"] == "rpc"]
    assert len(access) == 1
    assert access[0]["level"] == "debug"  # successful calls: DEBUG unless sampled
    assert access[0]["method"] == INGEST
    assert access[0]["code"] == "OK"
    assert access[0]["user_id"] == str(admin_id)
    assert access[0]["client_ids"] == "*"
