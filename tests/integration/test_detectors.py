"""Detectors end to end over gRPC (real servers, PostgreSQL): setup, sightings in (keyed,
idempotent, precise errors), events by time range and as a stream, battery history, travel
times computed by the worker's turn, and our own trackers heard by a detector."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapters.clock import SystemClock
from adapters.postgres.retention import PostgresRetention
from domain.retention import Prunable, RetentionPolicy
from tests.integration.conftest import Stack
from tests.integration.test_reports import tracker_in_new_run
from tracker.v1 import detector_pb2 as d
from tracker.v1 import detector_query_service_pb2 as dq
from tracker.v1 import detector_query_service_pb2_grpc as dq_grpc
from tracker.v1 import detector_service_pb2 as ds
from tracker.v1 import detector_service_pb2_grpc as ds_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import status_pb2 as sp
from tracker.v1 import status_query_service_pb2 as st
from tracker.v1 import status_query_service_pb2_grpc as st_grpc
from usecases.maintenance import PruneExpired
from usecases.travel_times import ComputeTravelTimes, TravelTimeSettings

pytestmark = pytest.mark.integration


def stubs(stack: Stack) -> tuple[ds_grpc.DetectorServiceStub, dq_grpc.DetectorQueryServiceStub]:
    assert stack.collector_channel is not None
    assert stack.query_channel is not None
    return (
        ds_grpc.DetectorServiceStub(stack.collector_channel),
        dq_grpc.DetectorQueryServiceStub(stack.query_channel),
    )


async def new_client(stack: Stack, name: str = "D") -> str:
    return (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name=name)))
    ).client.id


async def detector(
    c: ds_grpc.DetectorServiceStub, client_id: str, name: str, lat: float, range_m: float = 50
) -> d.Detector:
    return (
        await c.CreateDetector(
            ds.CreateDetectorRequest(
                detector=d.Detector(
                    client_id=client_id,
                    display_name=name,
                    position=pb.GeoPoint(latitude=lat, longitude=13.4),
                    radios=[d.RADIO_BLUETOOTH, d.RADIO_WIFI],
                    range_m=range_m,
                )
            )
        )
    ).detector


def sighting(when: datetime, mac: bytes, rssi: int | None = None) -> d.Sighting:
    x = d.Sighting(mac_address=mac)
    x.seen_time.FromDatetime(when)
    if rssi is not None:
        x.rssi_dbm = rssi
    return x


def mac(n: int) -> bytes:
    return bytes([0x02, 0, 0, 0, n >> 8, n & 0xFF])


async def ingest(
    c: ds_grpc.DetectorServiceStub, messages: list[ds.IngestSightingsRequest]
) -> ds.IngestSightingsResponse:
    return await c.IngestSightings(iter(messages))


async def test_detectors_and_links_are_managed_and_listed(stack: Stack) -> None:
    c, q = stubs(stack)
    client = await new_client(stack)
    a = await detector(c, client, "A", 52.50)
    b = await detector(c, client, "B", 52.51)
    assert (await q.GetDetector(dq.GetDetectorRequest(id=a.id))).detector == a
    updated = (
        await c.UpdateDetector(
            ds.UpdateDetectorRequest(
                detector=d.Detector(id=a.id, display_name="A2", range_m=80),
                update_mask=field_mask_pb2.FieldMask(paths=["display_name"]),
            )
        )
    ).detector
    assert (updated.display_name, updated.range_m) == ("A2", 50)
    link = (
        await c.CreateLink(
            ds.CreateLinkRequest(link=d.Link(destination_detector_id=b.id, source_detector_id=a.id))
        )
    ).link
    assert link.max_seconds == 600  # the default
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.CreateLink(ds.CreateLinkRequest(link=link))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.UpdateLink(
            ds.UpdateLinkRequest(
                link=d.Link(
                    destination_detector_id=b.id, source_detector_id=a.id, max_seconds=90000
                )
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_seconds" in (err.value.details() or "")
    await c.UpdateLink(
        ds.UpdateLinkRequest(
            link=d.Link(destination_detector_id=b.id, source_detector_id=a.id, max_seconds=300)
        )
    )
    links = (await q.ListLinks(dq.ListLinksRequest(destination_detector_id=b.id))).links
    assert [(x.source_detector_id, x.max_seconds) for x in links] == [(a.id, 300)]
    # pages of one
    seen, token = [], ""
    while True:
        page = await q.ListDetectors(
            dq.ListDetectorsRequest(client_id=client, page_size=1, page_token=token)
        )
        seen += [x.id for x in page.detectors]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted([a.id, b.id])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await c.CreateDetector(
            ds.CreateDetectorRequest(
                detector=d.Detector(
                    client_id=client,
                    display_name="x",
                    position=pb.GeoPoint(latitude=95, longitude=0),
                    radios=[d.RADIO_BLUETOOTH],
                )
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "detector.position.latitude" in (err.value.details() or "")
    await c.DeleteLink(ds.DeleteLinkRequest(destination_detector_id=b.id, source_detector_id=a.id))
    await c.DeleteDetector(ds.DeleteDetectorRequest(id=a.id))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await q.GetDetector(dq.GetDetectorRequest(id=a.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_sightings_are_keyed_idempotent_and_named_when_bad(stack: Stack) -> None:
    c, q = stubs(stack)
    client = await new_client(stack)
    a = await detector(c, client, "A", 52.5)
    now = datetime.now(UTC).replace(microsecond=0)
    good = [sighting(now - timedelta(seconds=i), mac(i), -60) for i in range(20)]
    bad = [
        d.Sighting(mac_address=mac(1)),  # no time
        sighting(now, b"\x01\x02"),  # short MAC
        sighting(now, b""),  # no id at all
        sighting(now + timedelta(hours=2), mac(2)),  # future
    ]
    message = ds.IngestSightingsRequest(detector_id=a.id, sightings=good + bad)
    message.status.report_time.FromDatetime(now)
    message.status.battery_voltage = 3.7
    message.status.bluetooth_count = 20
    out = await ingest(c, [message])
    assert (out.received_count, out.stored_count, out.rejected_count, out.status_count) == (
        24,
        20,
        4,
        1,
    )
    assert [e.field for e in out.errors] == [
        "sightings[20].seen_time",
        "sightings[21].mac_address",
        "sightings[22].mac_address",
        "sightings[23].seen_time",
    ]
    again = await ingest(c, [ds.IngestSightingsRequest(detector_id=a.id, sightings=good)])
    assert (again.stored_count, again.duplicate_count) == (0, 20)

    events = (
        await q.ListDetectorEvents(
            dq.ListDetectorEventsRequest(detector_ids=[a.id], page_size=1000)
        )
    ).events
    assert len(events) == 20
    keys = {e.device_key for e in events}
    assert len(keys) == 20
    assert all(len(k) == 16 for k in keys)
    assert not {mac(i) for i in range(20)} & {k[:6] for k in keys}
    # A time range, paged by three.
    request = dq.ListDetectorEventsRequest(detector_ids=[a.id], page_size=3)
    request.start_time.FromDatetime(now - timedelta(seconds=9))
    request.end_time.FromDatetime(now - timedelta(seconds=2))
    got = []
    while True:
        page = await q.ListDetectorEvents(request)
        got += [e.seen_time.ToDatetime(tzinfo=UTC) for e in page.events]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert sorted(got) == [now - timedelta(seconds=i) for i in range(9, 2, -1)]
    readings = (
        await q.ListBatteryReadings(dq.ListBatteryReadingsRequest(detector_id=a.id))
    ).readings
    assert [(x.battery_voltage, x.bluetooth_count) for x in readings] == [(3.7, 20)]
    # Someone else's (or nobody's) detector ends the stream with NOT_FOUND.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest(c, [ds.IngestSightingsRequest(detector_id=str(uuid.uuid4()), sightings=good)])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stream_of_events_hands_out_new_ones_once(stack: Stack) -> None:
    c, q = stubs(stack)
    client = await new_client(stack)
    a = await detector(c, client, "A", 52.5)
    now = datetime.now(UTC).replace(microsecond=0)
    await ingest(
        c, [ds.IngestSightingsRequest(detector_id=a.id, sightings=[sighting(now, mac(1))])]
    )
    stream = q.StreamDetectorEvents(dq.StreamDetectorEventsRequest(detector_ids=[a.id]))
    first = await stream.read()
    assert list(first.events) == []  # listening; what was stored before is not replayed
    for k in range(3):
        await ingest(
            c,
            [
                ds.IngestSightingsRequest(
                    detector_id=a.id,
                    sightings=[
                        sighting(now - timedelta(seconds=k * 10 + i), mac(100 + i))
                        for i in range(5)
                    ],
                )
            ],
        )
    received: list[d.DetectorEvent] = []
    async with asyncio.timeout(20):
        while len(received) < 15:
            received += (await stream.read()).events
    stream.cancel()
    assert len({(e.device_key, e.seen_time.ToSeconds()) for e in received}) == 15


async def read_events(stream: object, n: int) -> tuple[list[d.DetectorEvent], str]:
    """Read until ``n`` events came; return them and the last message's cursor."""
    got: list[d.DetectorEvent] = []
    cursor = ""
    async with asyncio.timeout(20):
        while len(got) < n:
            message = await stream.read()  # type: ignore[attr-defined]
            got += message.events
            cursor = message.cursor
    return got, cursor


def precondition(err: grpc.aio.AioRpcError) -> error_details_pb2.PreconditionFailure.Violation:
    status = rpc_status.from_call(err)
    assert status is not None
    (detail,) = status.details
    failure = error_details_pb2.PreconditionFailure()
    assert detail.Unpack(failure)
    (violation,) = failure.violations
    return violation


async def test_stream_of_events_resumes_from_a_cursor_unless_retention_deleted_past_it(
    stack: Stack,
) -> None:
    c, q = stubs(stack)
    a = await detector(c, await new_client(stack), "A", 52.5)
    now = datetime.now(UTC).replace(microsecond=0)
    stream = q.StreamDetectorEvents(dq.StreamDetectorEventsRequest(detector_ids=[a.id]))
    listening = (await stream.read()).cursor  # a consumer that then stopped reading
    assert listening
    # a late upload: one sighting past the retention (90 days), one recent
    old, recent = sighting(now - timedelta(days=100), mac(1)), sighting(now, mac(2))
    await ingest(c, [ds.IngestSightingsRequest(detector_id=a.id, sightings=[old, recent])])
    got, read_both = await read_events(stream, 2)  # a consumer that read them
    stream.cancel()
    assert len(got) == 2

    # resumed, each cursor hands out what came after it
    again = q.StreamDetectorEvents(
        dq.StreamDetectorEventsRequest(detector_ids=[a.id], after_cursor=listening)
    )
    assert (await again.read()).cursor == listening
    assert len((await read_events(again, 2))[0]) == 2
    again.cancel()

    assert stack.container is not None
    pool = await stack.container.db_pool.async_()
    policy = RetentionPolicy({Prunable.SIGHTINGS: timedelta(days=90)})
    assert await PruneExpired(PostgresRetention(pool), SystemClock(), policy)() == {
        Prunable.SIGHTINGS: 1
    }

    # the cursor from before the deleted sighting: refused before any message
    expired = q.StreamDetectorEvents(
        dq.StreamDetectorEventsRequest(detector_ids=[a.id], after_cursor=listening)
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await expired.read()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "after_cursor" in (err.value.details() or "")
    violation = precondition(err.value)
    assert (violation.type, violation.subject) == ("CURSOR_EXPIRED", "after_cursor")

    # the cursor that had read it resumes as before
    resumed = q.StreamDetectorEvents(
        dq.StreamDetectorEventsRequest(detector_ids=[a.id], after_cursor=read_both)
    )
    assert list((await resumed.read()).events) == []
    later = sighting(now + timedelta(seconds=1), mac(3))
    await ingest(c, [ds.IngestSightingsRequest(detector_id=a.id, sightings=[later])])
    (event,), _ = await read_events(resumed, 1)
    resumed.cancel()
    assert event.seen_time.ToDatetime(tzinfo=UTC) == now + timedelta(seconds=1)

    # not a cursor of this stream: INVALID_ARGUMENT on the field
    for bad in ("matrix", "bm90LWEtc25hcHNob3Q"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await q.StreamDetectorEvents(
                dq.StreamDetectorEventsRequest(detector_ids=[a.id], after_cursor=bad)
            ).read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "after_cursor" in str(rpc_status.from_call(err.value))


async def test_travel_times_follow_matched_passes_and_skip_stops(stack: Stack) -> None:
    c, q = stubs(stack)
    client = await new_client(stack)
    a = await detector(c, client, "A", 52.50)
    b = await detector(c, client, "B", 52.51)
    await c.CreateLink(
        ds.CreateLinkRequest(link=d.Link(destination_detector_id=b.id, source_detector_id=a.id))
    )
    start = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    at_a, at_b = [], []
    for n in range(60):  # a car a minute; 120 s, every 7th stops for 5 minutes
        t = start + timedelta(seconds=60 * n)
        travel = 120 + (n % 5) + (300 if n % 7 == 0 else 0)
        for k in range(3):  # three detections per pass, the middle one the strongest
            at_a.append(sighting(t + timedelta(seconds=2 * k), mac(n), -70 + 10 * (k == 1)))
            at_b.append(
                sighting(t + timedelta(seconds=travel + 2 * k), mac(n), -70 + 10 * (k == 1))
            )
    await ingest(
        c,
        [
            ds.IngestSightingsRequest(detector_id=a.id, sightings=at_a),
            ds.IngestSightingsRequest(detector_id=b.id, sightings=at_b),
        ],
    )
    assert stack.container is not None
    uow = await stack.container.uow_factory.async_()
    turn = ComputeTravelTimes(uow, stack.container.clock(), "test", TravelTimeSettings())
    stream = q.StreamTravelTimes(dq.StreamTravelTimesRequest(destination_detector_id=b.id))
    assert list((await stream.read()).travel_times) == []
    result = await turn()
    assert result.destinations == 1
    assert result.bins > 0
    bins = (
        await q.ListTravelTimes(
            dq.ListTravelTimesRequest(
                destination_detector_id=b.id, source_detector_id=a.id, page_size=100
            )
        )
    ).travel_times
    assert len(bins) == result.bins
    full = [x for x in bins if x.used_count + x.rejected_count >= 4]
    assert full
    for x in full:
        assert 120 <= x.estimate_s <= 124
        assert x.p10_s <= x.estimate_s <= x.p90_s <= 124
    assert sum(x.rejected_count for x in bins) >= 6  # the stops
    assert max(x.mean_s for x in bins) > 200  # the plain mean is pulled by them
    latest = (
        await q.GetLatestTravelTimes(dq.GetLatestTravelTimesRequest(destination_detector_id=b.id))
    ).travel_times
    assert [x.source_detector_id for x in latest] == [a.id]
    async with asyncio.timeout(20):
        pushed = (await stream.read()).travel_times
    stream.cancel()
    assert pushed
    assert all(x.destination_detector_id == b.id for x in pushed)
    # a second turn right away finds nothing due
    assert (await turn()).destinations == 0


async def test_our_tracker_heard_by_a_detector_becomes_its_report(stack: Stack) -> None:
    c, _ = stubs(stack)
    tracker = await tracker_in_new_run(stack)
    gate = await detector(c, tracker.client_id, "gate", 48.1, range_m=30)
    now = datetime.now(UTC).replace(microsecond=0)
    raw = bytes.fromhex(tracker.mac_address.replace(":", ""))
    out = await ingest(
        c,
        [
            ds.IngestSightingsRequest(
                detector_id=gate.id,
                sightings=[sighting(now, raw, -50), sighting(now, mac(7), -50)],
            )
        ],
    )
    assert (out.stored_count, out.tracker_report_count) == (2, 1)
    assert stack.query_channel is not None
    status = st_grpc.StatusQueryServiceStub(stack.query_channel)
    points = (
        await status.ListLocationHistory(
            st.ListLocationHistoryRequest(tracker_id=tracker.id, granularity=sp.GRANULARITY_RAW)
        )
    ).points
    assert [(p.position.latitude, p.horizontal_accuracy_m, p.source) for p in points] == [
        (48.1, 30, sp.REPORT_SOURCE_DETECTOR)
    ]
