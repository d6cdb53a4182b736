"""Servicer of report ingestion: a client stream of batches, one summary back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.errors import InvalidArgument, field_prefix
from tracker.v1 import report_service_pb2 as r
from tracker.v1 import report_service_pb2_grpc as r_grpc
from usecases.reports import MAX_VIOLATIONS, IngestReports, NewReport

Ctx = grpc.aio.ServicerContext


def _new_report(m: r.ReportInput) -> NewReport:
    return NewReport(
        tracker_id=cv.optional_id(m.tracker_id, "tracker_id"),
        hashed_advertisement_key=m.hashed_advertisement_key,
        report_time=cv.from_ts(m, "report_time") if m.HasField("report_time") else None,
        latitude=m.latitude,
        longitude=m.longitude,
        confidence=m.confidence,
        horizontal_accuracy_m=m.horizontal_accuracy_m,
        status=m.status,
        published_time=cv.from_ts(m, "published_time") if m.HasField("published_time") else None,
        source=m.source or "push",
    )


class ReportServicer(r_grpc.ReportServiceServicer):
    def __init__(self, ingest: IngestReports) -> None:
        self._ingest = ingest

    async def IngestReports(
        self, request_iterator: AsyncIterator[r.IngestReportsRequest], context: Ctx
    ) -> r.IngestReportsResponse:
        who = caller()
        out = r.IngestReportsResponse()
        offset = 0
        async for message in request_iterator:
            items = []
            for i, m in enumerate(message.reports):
                with field_prefix(f"reports[{offset + i}]"):
                    if not m.tracker_id and not m.hashed_advertisement_key:
                        raise InvalidArgument(
                            "tracker_id", "tracker_id or hashed_advertisement_key is required"
                        )
                    items.append(_new_report(m))
            result = await self._ingest(who, items, offset)
            offset += len(items)
            out.received_count += result.received
            out.stored_count += result.stored
            out.duplicate_count += result.duplicates
            out.rejected_count += result.rejected_count
            for v in result.rejected:
                if len(out.errors) < MAX_VIOLATIONS:
                    out.errors.append(r.FieldError(field=v.field, description=v.reason))
        return out
