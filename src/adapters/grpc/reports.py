"""Servicer of report ingestion: a client stream of batches, one summary back.

Each message is read into columns (``IncomingReports``) straight from the protobuf (upb) by a
reader task, while the use case stores the previous ones: messages that arrived meanwhile are
stored together, in one transaction, up to MAX_REPORTS_PER_TRANSACTION.
Transactions commit in stream order, so what is stored is always a prefix of the messages;
if the stream fails, its status says how long that prefix is (``committed_messages``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from adapters.grpc.auth import caller
from adapters.grpc.errors import StreamInterrupted
from adapters.grpc.streams import ReadAhead
from domain.reports import MAX_TIME_US, IngestResult
from tracker.v1 import report_service_pb2 as r
from tracker.v1 import report_service_pb2_grpc as r_grpc
from usecases.reports import MAX_VIOLATIONS, IncomingReports, IngestReports, check_message

Ctx = grpc.aio.ServicerContext

MAX_REPORTS_PER_TRANSACTION = 20_000
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


def _checked_incoming(message: r.IngestReportsRequest) -> IncomingReports:
    batch = incoming(message)
    check_message(batch)
    return batch


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
        offset = 0
        async with ReadAhead(request_iterator, _checked_incoming) as ahead:
            try:
                ended = False
                while not ended:
                    first = await ahead.next()
                    if first is None:
                        break
                    group, count = first, 1
                    while len(group) < MAX_REPORTS_PER_TRANSACTION:
                        got, more = ahead.ready()
                        if not got:
                            break
                        if more is None:
                            ended = True
                            break
                        group.extend(more)
                        count += 1
                    done.add(await self._ingest(who, group, offset), count)
                    offset += len(group)
                await ahead.finish()  # raises what ended the reading early, if anything
            except Exception as exc:
                raise StreamInterrupted(exc, done.metadata()) from exc
        return done.out
