"""Exports on a real database and over gRPC (issue 17): ExportQueryService/ExportHistory
streams a run's or a tracker's history as CSV, GeoJSON and GPX that parse back into the
stored rows; a time range and confidence filter them; another client's run looks missing;
bad requests name their field; 200,000 reports go out with memory far below the export's
size; and trackerctl writes the same export and a track picture."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import pathlib
import tracemalloc
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from domain.access import Principal, Role
from domain.exports import ExportFormat, ExportQuery
from tests.conftest import process_env
from tests.integration.conftest import Stack
from tests.integration.fleet import BIN, wait_for
from tests.integration.test_grpc_setup import violations
from tests.integration.test_keys import run_of_new_client
from tests.integration.test_silence import new_trackers
from tracker.v1 import export_query_service_pb2 as ex
from tracker.v1 import export_query_service_pb2_grpc as ex_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_service_pb2 as s
from usecases.access import NewUser
from usecases.exports import HistoryExports

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 1, 6, 0, tzinfo=UTC)
GPX = "{http://www.topografix.com/GPX/1/1}"
SVG = "{http://www.w3.org/2000/svg}"


async def seed(database_url: str, trackers: list[str], per_tracker: int) -> None:
    """``per_tracker`` reports each, a minute apart, moving north-east; confidence 1 every
    tenth report, 3 otherwise; and two status changes each."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO reports (tracker_id, report_time, latitude_e7, longitude_e7,
                   confidence, horizontal_accuracy_m, source)
               SELECT t, $2::timestamptz + i * interval '1 minute', 535500000 + i * 1000,
                      99900000 + i * 2000, CASE WHEN i % 10 = 9 THEN 1 ELSE 3 END, 10 + i % 50,
                      'findmy'
               FROM unnest($1::uuid[]) t, generate_series(0, $3 - 1) i""",
            [uuid.UUID(t) for t in trackers],
            T0,
            per_tracker,
        )
        await conn.execute(
            """INSERT INTO status_history (tracker_id, report_time, latitude_e7, longitude_e7,
                   status, previous_status, horizontal_accuracy_m, confidence)
               SELECT t, $2::timestamptz, 535500000, 99900000, 'IN_STORAGE', NULL, 10, 3
               FROM unnest($1::uuid[]) t
               UNION ALL
               SELECT t, $2::timestamptz + interval '5 minutes', 535505000, 99910000,
                      'IN_TRANSIT', 'IN_STORAGE', 10, 3
               FROM unnest($1::uuid[]) t""",
            [uuid.UUID(t) for t in trackers],
            T0,
        )
    finally:
        await conn.close()


def stub(stack: Stack) -> ex_grpc.ExportQueryServiceStub:
    assert stack.query_channel is not None
    return ex_grpc.ExportQueryServiceStub(stack.query_channel)


async def export(stack: Stack, **fields: object) -> tuple[str, str]:
    content_types, data = [], []
    async for chunk in stub(stack).ExportHistory(ex.ExportHistoryRequest(**fields)):
        content_types.append(chunk.content_type)
        data.append(chunk.data)
    assert content_types[0]
    assert not any(content_types[1:])
    return content_types[0], b"".join(data).decode()


async def world(stack: Stack, database_url: str, per_tracker: int = 30) -> tuple[str, list[str]]:
    _client, run = await run_of_new_client(stack, f"export-{uuid.uuid4().hex[:6]}")
    trackers = sorted(await new_trackers(stack, run.id, 3), key=uuid.UUID)
    await seed(database_url, trackers, per_tracker)
    return run.id, trackers


async def test_a_run_exports_as_csv_geojson_and_gpx_that_parse_back(
    stack: Stack, database_url: str
) -> None:
    run_id, trackers = await world(stack, database_url)
    kept = [i for i in range(30) if i % 10 != 9]  # the default confidence (2) drops 1s

    kind, text = await export(
        stack, production_run_id=run_id, format=ex.EXPORT_FORMAT_CSV, include_status_changes=True
    )
    assert kind.startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    changes = [r for r in rows if r["record"] == "status_change"]
    reports = [r for r in rows if r["record"] == "report"]
    assert rows[: len(changes)] == changes  # status changes first
    assert [(r["tracker_id"], r["status"]) for r in changes] == [
        (t, st) for t in trackers for st in ("IN_STORAGE", "IN_TRANSIT")
    ]
    assert [(r["tracker_id"], datetime.fromisoformat(r["time"])) for r in reports] == [
        (t, T0 + timedelta(minutes=i)) for t in trackers for i in kept
    ]
    assert float(reports[1]["latitude"]) == pytest.approx(53.5501)
    assert float(reports[1]["longitude"]) == pytest.approx(9.9902)

    kind, text = await export(stack, production_run_id=run_id, format=ex.EXPORT_FORMAT_GEOJSON)
    assert kind == "application/geo+json"
    doc = json.loads(text)
    assert doc["type"] == "FeatureCollection"
    lines = [f for f in doc["features"] if f["geometry"]["type"] == "LineString"]
    assert [f["properties"]["tracker_id"] for f in lines] == trackers
    coords = lines[0]["geometry"]["coordinates"]
    assert len(coords) == len(kept)
    assert coords[1] == [pytest.approx(9.9902), pytest.approx(53.5501)]  # [lon, lat]
    assert not [f for f in doc["features"] if f["properties"]["kind"] == "status_change"]

    kind, text = await export(
        stack,
        production_run_id=run_id,
        format=ex.EXPORT_FORMAT_GPX,
        include_status_changes=True,
        min_confidence=1,
    )
    assert kind == "application/gpx+xml"
    root = ET.fromstring(text.encode())
    assert root.tag == f"{GPX}gpx"
    assert root.get("version") == "1.1"
    assert [c.tag.removeprefix(GPX) for c in root] == ["wpt"] * 6 + ["trk"] * 3
    for trk, tracker in zip(root.findall(f"{GPX}trk"), trackers, strict=True):
        assert trk.findtext(f"{GPX}name") == tracker
        pts = trk.findall(f"{GPX}trkseg/{GPX}trkpt")
        assert len(pts) == 30  # min_confidence 1: every report
        times = [datetime.fromisoformat(p.findtext(f"{GPX}time", "")) for p in pts]
        assert times == sorted(times)


async def test_a_tracker_and_a_time_range(stack: Stack, database_url: str) -> None:
    _, trackers = await world(stack, database_url)
    start, end = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
    request = ex.ExportHistoryRequest(
        tracker_id=trackers[1], format=ex.EXPORT_FORMAT_CSV, min_confidence=3
    )
    request.start_time.FromDatetime(start)
    request.end_time.FromDatetime(end)
    data = b"".join([c.data async for c in stub(stack).ExportHistory(request)])
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    assert {r["tracker_id"] for r in rows} == {trackers[1]}
    assert [datetime.fromisoformat(r["time"]) for r in rows] == [
        T0 + timedelta(minutes=i) for i in range(10, 20) if i % 10 != 9
    ]


async def test_another_clients_run_looks_missing_and_bad_requests_name_the_field(
    stack: Stack, database_url: str
) -> None:
    run_id, trackers = await world(stack, database_url)
    other, _ = await run_of_new_client(stack, f"other-{uuid.uuid4().hex[:6]}")
    await stack.access.create_user(
        Principal.system(),
        NewUser(
            email="export-viewer@example.com",
            password="export-password-123",
            memberships={uuid.UUID(other.id): Role.VIEWER},
        ),
    )
    outsider = stack.as_token(await stack.token_for("export-viewer@example.com"))
    for target, value in (("production_run_id", run_id), ("tracker_id", trackers[0])):
        codes = []
        for ident in (value, str(uuid.uuid4())):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await export(outsider, **{target: ident, "format": ex.EXPORT_FORMAT_CSV})
            codes.append((err.value.code(), err.value.details().replace(ident, "X")))
        assert codes[0] == codes[1]
        assert codes[0][0] == grpc.StatusCode.NOT_FOUND

    bad: list[tuple[ex.ExportHistoryRequest, str]] = [
        (ex.ExportHistoryRequest(format=ex.EXPORT_FORMAT_CSV), "tracker_id"),
        (ex.ExportHistoryRequest(tracker_id=trackers[0]), "format"),
        (ex.ExportHistoryRequest(tracker_id="nope", format=ex.EXPORT_FORMAT_GPX), "tracker_id"),
        (
            ex.ExportHistoryRequest(tracker_id=trackers[0], format=3, min_confidence=7),
            "min_confidence",
        ),
    ]
    backwards = ex.ExportHistoryRequest(production_run_id=run_id, format=ex.EXPORT_FORMAT_CSV)
    backwards.start_time.FromDatetime(T0)
    backwards.end_time.FromDatetime(T0 - timedelta(days=1))
    bad.append((backwards, "end_time"))
    for request, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in stub(stack).ExportHistory(request):
                pass
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in violations(err.value), field


async def test_a_stream_waiting_on_its_reader_holds_one_cursor_not_the_export(
    stack: Stack, database_url: str
) -> None:
    run_id, _ = await world(stack, database_url, per_tracker=40_000)  # ~13 MiB of GPX
    conn = await asyncpg.connect(database_url)
    try:

        async def one_held_cursor() -> bool:
            rows = await conn.fetch(
                """SELECT state FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()
                     AND query LIKE '%FROM reports r%'"""
            )
            return [r["state"] for r in rows] == ["idle in transaction"]

        call = stub(stack).ExportHistory(
            ex.ExportHistoryRequest(production_run_id=run_id, format=ex.EXPORT_FORMAT_GPX)
        )
        first = await call.read()
        assert first.content_type == "application/gpx+xml"
        # the client reads no further: the server waits (flow control) with its cursor open,
        # having read a few pages, not the export
        assert await wait_for(one_held_cursor, 10) is True
        rest = 0
        async for chunk in call:
            rest += len(chunk.data)
        assert len(first.data) + rest > 10_000_000
    finally:
        await conn.close()


async def test_eighty_thousand_reports_stream_in_bounded_memory(
    stack: Stack, database_url: str
) -> None:
    """The peak follows the page size, not the export's: what shows it is how many pages the
    export spans, not its size. At PAGE_ROWS (5,000) a page peaks at ~5 MB, so a 200,000-report
    export (40 pages, 25 MB) was needed for a peak under a quarter of it; pages of 1,000 rows
    (peak ~1.5 MB) over 80,000 reports (80 pages, 10 MB) show the same at 2.5x less work; pages
    of 100 rows then peak far lower (~0.5 MB; what remains is the chunk and fixed overhead)."""
    _client, run = await run_of_new_client(stack, "export-big")
    trackers = await new_trackers(stack, run.id, 20)
    await seed(database_url, trackers, 4_000)  # 80,000 reports
    assert stack.container is not None
    source = await stack.container.export_source.async_()
    query = ExportQuery(ExportFormat.GPX, production_run_id=uuid.UUID(run.id), min_confidence=1)

    async def measure(page_rows: int) -> tuple[int, int, int]:
        chunks = await HistoryExports(source, page_rows=page_rows).export(Principal.system(), query)
        total = points = 0
        tracemalloc.start()
        try:
            async for chunk in chunks:
                total += len(chunk)
                points += chunk.count(b"<trkpt ")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return total, points, peak

    pages = 1_000
    total, points, peak = await measure(pages)
    assert points == 80_000
    assert total > 8_000_000  # the export: ~125 bytes a point
    # a page of rows and a chunk at a time: far below the export's size ...
    assert peak < total / 4, (peak, total)
    # ... and following the page size, not the export's: pages 10x smaller, a peak far lower
    small_total, _, small_peak = await measure(pages // 10)
    assert small_total == total
    assert small_peak < peak / 2, (small_peak, peak)
    print(f"export {total:,} bytes; tracemalloc peak {peak:,} (pages of {pages}),")
    print(f"{small_peak:,} (pages of {pages // 10})")


async def trackerctl(database_url: str, *args: str) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "trackerctl"),
        *args,
        env={**process_env(), "TRACKER_DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err.decode()


async def test_trackerctl_exports_and_draws_a_track_with_its_fences(
    stack: Stack, database_url: str, tmp_path: pathlib.Path
) -> None:
    run_id, trackers = await world(stack, database_url)
    for kind, name, lat, lon, radius in (
        (pb.LOCATION_KIND_STORAGE, "Depot", 53.55, 9.99, 300.0),
        (pb.LOCATION_KIND_DELIVERY, "Customer", 53.553, 9.996, 150.0),
    ):
        await stack.setup.CreateLocation(
            s.CreateLocationRequest(
                location=pb.Location(
                    production_run_id=run_id,
                    kind=kind,
                    display_name=name,
                    center=pb.GeoPoint(latitude=lat, longitude=lon),
                    radius_m=radius,
                )
            )
        )
    code, out, err = await trackerctl(
        database_url, "export", "--run", run_id, "--format", "geojson", "--status-changes"
    )
    assert code == 0, err
    _, over_grpc = await export(
        stack,
        production_run_id=run_id,
        format=ex.EXPORT_FORMAT_GEOJSON,
        include_status_changes=True,
    )
    assert json.loads(out) == json.loads(over_grpc)

    target = tmp_path / "track.gpx"
    code, _, err = await trackerctl(
        database_url, "export", "--tracker", trackers[0], "--format", "gpx", "--out", str(target)
    )
    assert code == 0, err
    assert len(ET.parse(target).getroot().findall(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt")) == 27

    picture = tmp_path / "track.svg"
    code, _, err = await trackerctl(
        database_url, "track-svg", "--tracker", trackers[0], "--out", str(picture)
    )
    assert code == 0, err
    root = ET.parse(picture).getroot()
    circles = root.findall(f".//{SVG}g[@id='fences']/{SVG}circle")
    assert sorted(c.get("class") for c in circles) == ["fence delivery", "fence storage"]
    scale = float(root.get("data-pixels-per-metre", "0"))
    for c in circles:
        radius = float(c.get("data-radius-m", "0"))
        assert radius in (300.0, 150.0)
        assert float(c.get("r", "0")) == pytest.approx(radius * scale, rel=0.01)
    assert len(root.findall(f".//{SVG}g[@id='status-changes']/{SVG}path")) == 2

    code, _, err = await trackerctl(database_url, "export", "--tracker", str(uuid.uuid4()))
    assert code == 1
    assert "not found" in err.lower()
