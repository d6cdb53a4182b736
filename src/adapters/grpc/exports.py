"""ExportQueryService (issue 17): a run's or a tracker's history as CSV, GeoJSON or GPX, a
stream of chunks written as the rows are read."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.errors import InvalidArgument
from domain.exports import CONTENT_TYPES, ExportFormat, ExportQuery
from tracker.v1 import export_query_service_pb2 as pb
from tracker.v1 import export_query_service_pb2_grpc as pb_grpc
from usecases.exports import HistoryExports

Ctx = grpc.aio.ServicerContext

FORMATS = {
    pb.EXPORT_FORMAT_CSV: ExportFormat.CSV,
    pb.EXPORT_FORMAT_GEOJSON: ExportFormat.GEOJSON,
    pb.EXPORT_FORMAT_GPX: ExportFormat.GPX,
}


def export_query(request: pb.ExportHistoryRequest) -> ExportQuery:
    target = request.WhichOneof("target")
    if target is None:
        raise InvalidArgument("tracker_id", "set exactly one of tracker_id, production_run_id")
    fmt = FORMATS.get(request.format)
    if fmt is None:
        raise InvalidArgument("format", "must be EXPORT_FORMAT_CSV, _GEOJSON or _GPX")
    return ExportQuery(
        format=fmt,
        tracker_id=cv.parse_id(request.tracker_id, "tracker_id")
        if target == "tracker_id"
        else None,
        production_run_id=(
            cv.parse_id(request.production_run_id, "production_run_id")
            if target == "production_run_id"
            else None
        ),
        start_time=cv.from_ts(request, "start_time") if request.HasField("start_time") else None,
        end_time=cv.from_ts(request, "end_time") if request.HasField("end_time") else None,
        min_confidence=request.min_confidence,
        include_status_changes=request.include_status_changes,
    )


_closing: set[asyncio.Task[None]] = set()


def _close_soon(chunks: AsyncGenerator[bytes, None]) -> None:
    async def close() -> None:
        with contextlib.suppress(RuntimeError):  # still running: its own cancellation ends it
            await chunks.aclose()

    task = asyncio.get_running_loop().create_task(close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class ExportQueryServicer(pb_grpc.ExportQueryServiceServicer):
    def __init__(self, exports: HistoryExports) -> None:
        self._exports = exports

    async def ExportHistory(
        self, request: pb.ExportHistoryRequest, context: Ctx
    ) -> AsyncIterator[pb.ExportHistoryResponse]:
        query = export_query(request)
        chunks = await self._exports.export(caller(), query)
        # A call that ends while its stream waits on flow control leaves this generator
        # suspended until the garbage collector finds it; close the export when gRPC says
        # the call is done: that ends its snapshot and gives its connection back.
        context.add_done_callback(lambda _: _close_soon(chunks))
        first = True
        async with aclosing(chunks):  # a cancelled call gives its cursor back at once
            async for data in chunks:
                yield pb.ExportHistoryResponse(
                    data=data, content_type=CONTENT_TYPES[query.format] if first else ""
                )
                first = False
