"""Servicers of detectors (seed 003): ``DetectorService`` on the collector (detectors, links,
sightings in), ``DetectorQueryService`` on the query server (reads, event and travel-time
streams). Thin translators: protobuf in -> domain values -> use case -> protobuf out."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from adapters.grpc.errors import StreamInterrupted
from adapters.grpc.streams import ReadAhead
from domain.detectors import Detector, DetectorEvent, DetectorStatusReading, Link, Radio
from domain.errors import InvalidArgument, field_prefix
from domain.pagination import PageRequest, PageTokens
from domain.ports.detectors import TravelTimeBin
from tracker.v1 import detector_pb2 as pb
from tracker.v1 import detector_query_service_pb2 as q
from tracker.v1 import detector_query_service_pb2_grpc as q_grpc
from tracker.v1 import detector_service_pb2 as s
from tracker.v1 import detector_service_pb2_grpc as s_grpc
from tracker.v1 import report_service_pb2 as r
from usecases.detector_events import DetectorEvents
from usecases.detectors import DetectorAdmin, DetectorQueries, NewDetector
from usecases.sightings import (
    MAX_VIOLATIONS,
    IncomingSightings,
    IngestSightings,
    SightingsResult,
    check_sightings_message,
)
from usecases.travel_times import TravelTimeQueries

Ctx = grpc.aio.ServicerContext

_RADIO_FROM_PB = {pb.RADIO_BLUETOOTH: Radio.BLUETOOTH, pb.RADIO_WIFI: Radio.WIFI}
_RADIO_TO_PB = {v: k for k, v in _RADIO_FROM_PB.items()}
_STREAM_CHUNK = 1000  # events per stream message
_BAD_US = -(2**62)  # nanos outside 0..999,999,999: refused as out of range


def _radios(values: Sequence[int]) -> tuple[Radio, ...]:
    out = []
    for n, v in enumerate(values):
        if v not in _RADIO_FROM_PB:
            raise InvalidArgument(f"radios[{n}]", "must be RADIO_BLUETOOTH or RADIO_WIFI")
        out.append(_RADIO_FROM_PB[v])  # type: ignore[index]
    return tuple(out)


_DETECTOR_READERS: dict[str, Callable[[pb.Detector], Any]] = {
    "display_name": lambda m: m.display_name,
    "position": lambda m: cv.geo_point(m, "position"),
    "radios": lambda m: _radios(m.radios),
    "range_m": lambda m: m.range_m,
}


def _detector_changes(msg: pb.Detector, mask: field_mask_pb2.FieldMask) -> dict[str, Any]:
    """AIP-134 over ``Detector.UPDATABLE``, as ``convert.changes_from`` for setup resources."""
    if mask.paths:
        unknown = [p for p in mask.paths if p not in Detector.UPDATABLE]
        if unknown:
            raise InvalidArgument(
                "update_mask",
                f"cannot update {', '.join(unknown)}; updatable: "
                f"{', '.join(sorted(Detector.UPDATABLE))}",
            )
        paths = list(dict.fromkeys(mask.paths))
    else:
        paths = [
            name
            for name in _DETECTOR_READERS
            if (msg.HasField(name) if name == "position" else bool(getattr(msg, name)))
        ]
    with field_prefix("detector"):
        return {name: _DETECTOR_READERS[name](msg) for name in paths}


def detector_pb(d: Detector) -> pb.Detector:
    return pb.Detector(
        id=str(d.id),
        client_id=str(d.client_id),
        display_name=d.display_name,
        position=cv.pb.GeoPoint(latitude=d.position.latitude, longitude=d.position.longitude),
        radios=[_RADIO_TO_PB[x] for x in d.radios],
        range_m=d.range_m,
        create_time=cv.ts(d.create_time),
        update_time=cv.ts(d.update_time),
    )


def link_pb(link: Link) -> pb.Link:
    return pb.Link(
        destination_detector_id=str(link.destination_id),
        source_detector_id=str(link.source_id),
        max_seconds=link.max_seconds,
        create_time=cv.ts(link.create_time),
        update_time=cv.ts(link.update_time),
    )


def event_pb(e: DetectorEvent) -> pb.DetectorEvent:
    out = pb.DetectorEvent(
        detector_id=str(e.detector_id),
        device_key=e.device_key,
        key_id=str(e.key_id),
        seen_time=cv.ts(e.seen_time),
        radio=_RADIO_TO_PB[e.radio],
    )
    if e.rssi_dbm is not None:
        out.rssi_dbm = e.rssi_dbm
    return out


def reading_pb(x: DetectorStatusReading) -> pb.BatteryReading:
    return pb.BatteryReading(
        detector_id=str(x.detector_id),
        report_time=cv.ts(x.report_time),
        battery_voltage=x.battery_voltage,
        bluetooth_count=x.bluetooth_count,
        wifi_count=x.wifi_count,
    )


def travel_time_pb(b: TravelTimeBin) -> pb.TravelTime:
    return pb.TravelTime(
        destination_detector_id=str(b.destination_id),
        source_detector_id=str(b.source_id),
        start_time=cv.ts(b.bin_start),
        end_time=cv.ts(b.bin_start + timedelta(seconds=b.bin_seconds)),
        estimate_s=b.estimate_s or 0.0,
        p10_s=b.p10_s or 0.0,
        p90_s=b.p90_s or 0.0,
        used_count=b.used,
        rejected_count=b.rejected,
        mean_s=b.mean_s,
        update_time=cv.ts(b.update_time),
    )


def _us(seconds: int, nanos: int) -> int:
    return seconds * 1_000_000 + nanos // 1000 if 0 <= nanos < 1_000_000_000 else _BAD_US


def incoming(message: s.IngestSightingsRequest) -> IncomingSightings:
    """One message as columns: one pass over the repeated field, plain values."""
    out = IncomingSightings(message.detector_id)
    times, macs, opaque, rssi, radios = (
        out.times_us,
        out.macs,
        out.opaque_ids,
        out.rssi,
        out.radios,
    )
    for m in message.sightings:
        if m.HasField("seen_time"):
            t = m.seen_time
            times.append(_us(t.seconds, t.nanos))
        else:
            times.append(None)
        macs.append(m.mac_address)
        opaque.append(m.opaque_id)
        rssi.append(m.rssi_dbm if m.HasField("rssi_dbm") else None)
        radios.append(m.radio)
    if message.HasField("status"):
        st = message.status
        with field_prefix("status"):
            out.status = DetectorStatusReading(
                uuid.UUID(int=0),  # the use case sets the detector
                cv.from_ts(st, "report_time"),
                st.battery_voltage,
                st.bluetooth_count,
                st.wifi_count,
            )
    check_sightings_message(out)
    return out


class _Progress:
    def __init__(self) -> None:
        self.out = s.IngestSightingsResponse()
        self.messages = 0

    def add(self, x: SightingsResult) -> None:
        o = self.out
        o.received_count += x.received
        o.stored_count += x.stored
        o.duplicate_count += x.duplicates
        o.rejected_count += x.rejected_count
        o.status_count += x.statuses
        o.tracker_report_count += x.tracker_reports
        for v in x.rejected:
            if len(o.errors) < MAX_VIOLATIONS:
                o.errors.append(r.FieldError(field=v.field, description=v.reason))
        self.messages += 1

    def metadata(self) -> dict[str, str]:
        return {"committed_messages": str(self.messages)}


class DetectorServicer(s_grpc.DetectorServiceServicer):
    def __init__(self, admin: DetectorAdmin, ingest: IngestSightings) -> None:
        self._admin, self._ingest = admin, ingest

    async def CreateDetector(
        self, request: s.CreateDetectorRequest, context: Ctx
    ) -> s.CreateDetectorResponse:
        d = request.detector
        with field_prefix("detector"):
            new = NewDetector(
                client_id=cv.parse_id(d.client_id, "client_id"),
                display_name=d.display_name,
                position=cv.geo_point(d, "position"),
                radios=_radios(d.radios),
                range_m=d.range_m,
            )
            detector = await self._admin.create(caller(), new)
        return s.CreateDetectorResponse(detector=detector_pb(detector))

    async def UpdateDetector(
        self, request: s.UpdateDetectorRequest, context: Ctx
    ) -> s.UpdateDetectorResponse:
        detector_id = cv.parse_id(request.detector.id, "detector.id")
        changes = _detector_changes(request.detector, request.update_mask)
        with field_prefix("detector"):
            detector = await self._admin.update(caller(), detector_id, changes)
        return s.UpdateDetectorResponse(detector=detector_pb(detector))

    async def DeleteDetector(
        self, request: s.DeleteDetectorRequest, context: Ctx
    ) -> s.DeleteDetectorResponse:
        await self._admin.delete(caller(), cv.parse_id(request.id))
        return s.DeleteDetectorResponse()

    async def CreateLink(self, request: s.CreateLinkRequest, context: Ctx) -> s.CreateLinkResponse:
        x = request.link
        with field_prefix("link"):
            dest = cv.parse_id(x.destination_detector_id, "destination_detector_id")
            src = cv.parse_id(x.source_detector_id, "source_detector_id")
            link = await self._admin.create_link(caller(), dest, src, x.max_seconds)
        return s.CreateLinkResponse(link=link_pb(link))

    async def UpdateLink(self, request: s.UpdateLinkRequest, context: Ctx) -> s.UpdateLinkResponse:
        x = request.link
        with field_prefix("link"):
            dest = cv.parse_id(x.destination_detector_id, "destination_detector_id")
            src = cv.parse_id(x.source_detector_id, "source_detector_id")
            link = await self._admin.update_link(caller(), dest, src, x.max_seconds)
        return s.UpdateLinkResponse(link=link_pb(link))

    async def DeleteLink(self, request: s.DeleteLinkRequest, context: Ctx) -> s.DeleteLinkResponse:
        dest = cv.parse_id(request.destination_detector_id, "destination_detector_id")
        src = cv.parse_id(request.source_detector_id, "source_detector_id")
        await self._admin.delete_link(caller(), dest, src)
        return s.DeleteLinkResponse()

    async def IngestSightings(
        self, request_iterator: AsyncIterator[s.IngestSightingsRequest], context: Ctx
    ) -> s.IngestSightingsResponse:
        who = caller()
        done = _Progress()
        offset = 0
        async with ReadAhead(request_iterator, incoming) as ahead:
            try:
                while (batch := await ahead.next()) is not None:
                    done.add(await self._ingest(who, batch, offset))
                    offset += len(batch)
                await ahead.finish()
            except Exception as exc:
                raise StreamInterrupted(exc, done.metadata()) from exc
        return done.out


def page_scope(rpc: str, *filters: object) -> str:
    """What a page token is bound to: this RPC and its filters."""
    return f"tracker.v1.DetectorQueryService/{rpc}?" + "|".join(str(p) for p in filters)


def _range(m: Message) -> tuple[datetime | None, datetime | None]:
    start = cv.from_ts(m, "start_time") if m.HasField("start_time") else None
    end = cv.from_ts(m, "end_time") if m.HasField("end_time") else None
    return start, end


class DetectorQueryServicer(q_grpc.DetectorQueryServiceServicer):
    def __init__(
        self,
        detectors: DetectorQueries,
        events: DetectorEvents,
        travel_times: TravelTimeQueries,
        tokens: PageTokens,
        poll_s: float = 0.5,
    ) -> None:
        self._detectors, self._events, self._travel = detectors, events, travel_times
        self._tokens, self._poll_s = tokens, poll_s

    def _page(self, request: Any, scope: str) -> PageRequest:
        return self._tokens.request(request.page_size, request.page_token, scope)

    async def GetDetector(
        self, request: q.GetDetectorRequest, context: Ctx
    ) -> q.GetDetectorResponse:
        d = await self._detectors.get(caller(), cv.parse_id(request.id))
        return q.GetDetectorResponse(detector=detector_pb(d))

    async def ListDetectors(
        self, request: q.ListDetectorsRequest, context: Ctx
    ) -> q.ListDetectorsResponse:
        client = cv.optional_id(request.client_id, "client_id")
        key = page_scope("ListDetectors", client)
        page = await self._detectors.list(caller(), client, self._page(request, key))
        return q.ListDetectorsResponse(
            detectors=[detector_pb(d) for d in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def ListLinks(self, request: q.ListLinksRequest, context: Ctx) -> q.ListLinksResponse:
        dest = cv.optional_id(request.destination_detector_id, "destination_detector_id")
        key = page_scope("ListLinks", dest)
        page = await self._detectors.list_links(caller(), dest, self._page(request, key))
        return q.ListLinksResponse(
            links=[link_pb(x) for x in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def ListDetectorEvents(
        self, request: q.ListDetectorEventsRequest, context: Ctx
    ) -> q.ListDetectorEventsResponse:
        ids = [cv.parse_id(x, f"detector_ids[{n}]") for n, x in enumerate(request.detector_ids)]
        start, end = _range(request)
        key = page_scope("ListDetectorEvents", ids, start, end)
        page = await self._events.events(caller(), ids, start, end, self._page(request, key))
        return q.ListDetectorEventsResponse(
            events=[event_pb(e) for e in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def StreamDetectorEvents(
        self, request: q.StreamDetectorEventsRequest, context: Ctx
    ) -> AsyncIterator[q.StreamDetectorEventsResponse]:
        ids = [cv.parse_id(x, f"detector_ids[{n}]") for n, x in enumerate(request.detector_ids)]
        start = await self._events.follow(caller(), ids, request.after_cursor or None)
        # the first poll checks the cursor (INVALID_ARGUMENT, CURSOR_EXPIRED) before anything
        # is sent
        events, position = await self._events.poll(ids, start, _STREAM_CHUNK)
        yield q.StreamDetectorEventsResponse(cursor=start)
        while True:
            if events:
                yield q.StreamDetectorEventsResponse(
                    events=[event_pb(e) for e in events], cursor=position
                )
            if len(events) < _STREAM_CHUNK:
                await asyncio.sleep(self._poll_s)
            events, position = await self._events.poll(ids, position, _STREAM_CHUNK)

    async def ListBatteryReadings(
        self, request: q.ListBatteryReadingsRequest, context: Ctx
    ) -> q.ListBatteryReadingsResponse:
        detector = cv.optional_id(request.detector_id, "detector_id")
        start, end = _range(request)
        key = page_scope("ListBatteryReadings", detector, start, end)
        page = await self._events.statuses(caller(), detector, start, end, self._page(request, key))
        return q.ListBatteryReadingsResponse(
            readings=[reading_pb(x) for x in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def ListTravelTimes(
        self, request: q.ListTravelTimesRequest, context: Ctx
    ) -> q.ListTravelTimesResponse:
        dest = cv.optional_id(request.destination_detector_id, "destination_detector_id")
        src = cv.optional_id(request.source_detector_id, "source_detector_id")
        start, end = _range(request)
        key = page_scope("ListTravelTimes", dest, src, start, end)
        page = await self._travel.list(caller(), dest, src, start, end, self._page(request, key))
        return q.ListTravelTimesResponse(
            travel_times=[travel_time_pb(b) for b in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetLatestTravelTimes(
        self, request: q.GetLatestTravelTimesRequest, context: Ctx
    ) -> q.GetLatestTravelTimesResponse:
        dest = cv.parse_id(request.destination_detector_id, "destination_detector_id")
        bins = await self._travel.latest(caller(), dest)
        return q.GetLatestTravelTimesResponse(travel_times=[travel_time_pb(b) for b in bins])

    async def StreamTravelTimes(
        self, request: q.StreamTravelTimesRequest, context: Ctx
    ) -> AsyncIterator[q.StreamTravelTimesResponse]:
        dest = cv.parse_id(request.destination_detector_id, "destination_detector_id")
        latest, position = await self._travel.follow(caller(), dest)
        yield q.StreamTravelTimesResponse(travel_times=[travel_time_pb(b) for b in latest])
        while True:
            bins, position = await self._travel.poll(dest, position)
            if bins:
                yield q.StreamTravelTimesResponse(travel_times=[travel_time_pb(b) for b in bins])
            else:
                await asyncio.sleep(self._poll_s)
