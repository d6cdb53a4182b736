"""Servicer of report ingestion: a client stream of batches, one summary back.

Each message is read into columns (``IncomingReports``) straight from the protobuf (upb) by a
reader task, while the use case stores the previous ones: messages that arrived meanwhile are
stored together, in one transaction, up to MAX_REPORTS_PER_TRANSACTION.
Transactions commit in stream order, so what is stored is always a prefix of the messages;
if the stream fails, its status says how long that prefix is (``committed_messages``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from adapters.grpc.auth import caller
from adapters.grpc.errors import StreamInterrupted
from domain.reports import MAX_TIME_US, IngestResult
from tracker.v1 import report_service_pb2 as r
from tracker.v1 import report_service_pb2_grpc as r_grpc
from usecases.reports import MAX_VIOLATIONS, IncomingReports, IngestReports, check_message

Ctx = grpc.aio.ServicerContext

MAX_REPORTS_PER_TRANSACTION = 20_000
_READ_AHEAD = 4  # messages read and converted ahead of the one being stored
_BAD_TIME = MAX_TIME_US + 1  # nanos outside 0..999,999,999: "timestamp out of range"


def _us(seconds: int, nanos: int) -> int:
    return seconds * 1_000_000 + nanos // 1000 if 0 <= nanos < 1_000_000_000 else _BAD_TIME


def incoming(message: r.IngestReportsRequest) -> IncomingReports:
    """One message's reports as columns: one pass over the repeated field, plain values."""
    out = IncomingReports()
    ids, keys, times = out.tracker_ids, out.hashed_keys, out.times_us
    lats, lons, confs = out.latitudes, out.longitudes, out.confidences
    accs, stats, pubs, srcs = out.accuracies_m, out.statuses, out.published_us, out.sources
    for m in message.reports:
        ids.append(m.tracker_id)
        keys.append(m.hashed_advertisement_key)
        if m.HasField("report_time"):
            t = m.report_time
            times.append(_us(t.seconds, t.nanos))
        else:
            times.append(None)
        lats.append(m.latitude)
        lons.append(m.longitude)
        confs.append(m.confidence)
        accs.append(m.horizontal_accuracy_m)
        stats.append(m.status)
        if m.HasField("published_time"):
            p = m.published_time
            pubs.append(_us(p.seconds, p.nanos))
        else:
            pubs.append(None)
        srcs.append(m.source or "push")
    return out


class _Progress:
    """What the stream has durably done so far, and its running summary."""

    def __init__(self) -> None:
        self.out = r.IngestReportsResponse()
        self.messages = 0
        self.reports = 0

    def add(self, result: IngestResult, messages: int) -> None:
        out = self.out
        out.received_count += result.received
        out.stored_count += result.stored
        out.duplicate_count += result.duplicates
        out.rejected_count += result.rejected_count
        for v in result.rejected:
            if len(out.errors) < MAX_VIOLATIONS:
                out.errors.append(r.FieldError(field=v.field, description=v.reason))
        self.messages += messages
        self.reports += result.received

    def metadata(self) -> dict[str, str]:
        return {"committed_messages": str(self.messages), "committed_reports": str(self.reports)}


class ReportServicer(r_grpc.ReportServiceServicer):
    def __init__(self, ingest: IngestReports) -> None:
        self._ingest = ingest

    async def IngestReports(
        self, request_iterator: AsyncIterator[r.IngestReportsRequest], context: Ctx
    ) -> r.IngestReportsResponse:
        who = caller()
        done = _Progress()
        queue: asyncio.Queue[IncomingReports | None] = asyncio.Queue(maxsize=_READ_AHEAD)
        reader = asyncio.create_task(self._read(request_iterator, queue))
        offset = 0
        try:
            ended = False
            while not ended:
                first = await queue.get()
                if first is None:
                    break
                group, count = first, 1
                while len(group) < MAX_REPORTS_PER_TRANSACTION and not queue.empty():
                    more = queue.get_nowait()
                    if more is None:
                        ended = True
                        break
                    group.extend(more)
                    count += 1
                done.add(await self._ingest(who, group, offset), count)
                offset += len(group)
            await reader  # raises what ended the reading early, if anything
        except asyncio.CancelledError:
            reader.cancel()
            raise
        except Exception as exc:
            reader.cancel()
            raise StreamInterrupted(exc, done.metadata()) from exc
        return done.out

    @staticmethod
    async def _read(
        request_iterator: AsyncIterator[r.IngestReportsRequest],
        queue: asyncio.Queue[IncomingReports | None],
    ) -> None:
        """Reads and converts messages while the previous ones are stored; None ends."""
        try:
            async for message in request_iterator:
                batch = incoming(message)
                check_message(batch)
                await queue.put(batch)
        finally:
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # after an error, too: the end
                await queue.put(None)
