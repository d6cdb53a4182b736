"""Exports (issue 17): the writers' CSV, GeoJSON and GPX parse back as what they must be,
and the use case checks, authorises and streams page by page (over an in-memory source)."""

from __future__ import annotations

import csv
import io
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest

from domain.access import Principal, Role
from domain.errors import InvalidArgument, NotFound
from domain.exports import (
    CSV_HEADER,
    ExportChange,
    ExportFormat,
    ExportPoint,
    ExportQuery,
    Fence,
    writer_for,
)
from usecases.exports import HistoryExports

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))
RUN, CLIENT, OTHER = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
GPX = "{http://www.topografix.com/GPX/1/1}"


def points() -> list[ExportPoint]:
    out = [
        ExportPoint(
            A, T0 + timedelta(minutes=i), 48.1 + i / 1000, 11.5 - i / 1000, 10 + i, 3, "findmy"
        )
        for i in range(5)
    ]
    out.append(ExportPoint(B, T0, -33.9, 151.2, 25, 2, 'a "quoted", odd\nsource'))
    out += [
        ExportPoint(C, T0 + timedelta(hours=i), 0.0, -0.5 * i, 5, 1, "detector") for i in range(3)
    ]
    return out


def changes() -> list[ExportChange]:
    return [
        ExportChange(A, T0, 48.1, 11.5, "IN_STORAGE", None),
        ExportChange(A, T0 + timedelta(minutes=4), 48.104, 11.496, "IN_TRANSIT", "IN_STORAGE"),
    ]


def write(fmt: ExportFormat, with_changes: bool = True) -> str:
    w = writer_for(fmt)
    parts = [w.begin()]
    if with_changes:
        parts += [w.change(c) for c in changes()]
    parts += [w.point(p) for p in points()]
    parts.append(w.end())
    return "".join(parts)


def test_csv_has_a_header_quotes_per_rfc_4180_and_round_trips() -> None:
    text = write(ExportFormat.CSV)
    assert text.startswith(",".join(CSV_HEADER) + "\r\n")
    assert text.endswith("\r\n")
    assert text.count("\r\n") == 1 + 2 + 9
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["record"] for r in rows] == ["status_change"] * 2 + ["report"] * 9
    assert rows[1]["status"] == "IN_TRANSIT"
    assert rows[1]["previous_status"] == "IN_STORAGE"
    odd = rows[2 + 5]
    assert odd["source"] == 'a "quoted", odd\nsource'  # quotes doubled, comma and line kept
    assert odd["tracker_id"] == str(B)
    for r, p in zip(rows[2:], points(), strict=True):
        assert float(r["latitude"]) == pytest.approx(p.latitude, abs=1e-7)
        assert float(r["longitude"]) == pytest.approx(p.longitude, abs=1e-7)
        assert datetime.fromisoformat(r["time"]) == p.report_time
        assert int(r["horizontal_accuracy_m"]) == p.horizontal_accuracy_m


def test_geojson_is_a_feature_collection_with_a_line_per_tracker_lon_lat() -> None:
    doc = json.loads(write(ExportFormat.GEOJSON))
    assert doc["type"] == "FeatureCollection"
    feats = doc["features"]
    assert all(
        f["type"] == "Feature" and set(f) == {"type", "geometry", "properties"} for f in feats
    )
    lines = [f for f in feats if f["geometry"]["type"] == "LineString"]
    assert [f["properties"]["tracker_id"] for f in lines] == [str(A), str(C)]
    line_a = lines[0]
    assert line_a["geometry"]["coordinates"] == [
        [pytest.approx(p.longitude), pytest.approx(p.latitude)] for p in points()[:5]
    ]
    assert line_a["properties"]["report_count"] == 5
    assert line_a["properties"]["first_time"] == "2026-03-01T12:00:00Z"
    assert line_a["properties"]["last_time"] == "2026-03-01T12:04:00Z"
    kinds = [(f["properties"]["kind"], f["properties"]["tracker_id"]) for f in feats]
    assert kinds == [
        ("status_change", str(A)),
        ("status_change", str(A)),
        ("track", str(A)),
        ("first_report", str(A)),
        ("last_report", str(A)),
        ("only_report", str(B)),  # one report is a Point: a LineString needs two positions
        ("track", str(C)),
        ("first_report", str(C)),
        ("last_report", str(C)),
    ]
    lone = feats[5]["geometry"]
    assert lone == {"type": "Point", "coordinates": [151.2, -33.9]}
    for f in feats:
        coords = f["geometry"]["coordinates"]
        for lon, lat in coords if f["geometry"]["type"] == "LineString" else [coords]:
            assert -180 <= lon <= 180
            assert -90 <= lat <= 90


def test_geojson_of_nothing_is_an_empty_collection() -> None:
    w = writer_for(ExportFormat.GEOJSON)
    assert json.loads(w.begin() + w.end()) == {"type": "FeatureCollection", "features": []}


def test_gpx_is_gpx_1_1_with_waypoints_before_one_track_per_tracker() -> None:
    root = ET.fromstring(write(ExportFormat.GPX).encode())
    assert root.tag == f"{GPX}gpx"
    assert root.get("version") == "1.1"
    assert root.get("creator")
    children = [c.tag.removeprefix(GPX) for c in root]
    assert children == ["wpt", "wpt", "trk", "trk", "trk"]  # GPX 1.1: wpt*, rte*, trk*
    for wpt in root.findall(f"{GPX}wpt"):
        assert [c.tag.removeprefix(GPX) for c in wpt] == ["time", "name", "desc", "type"]
    tracks = root.findall(f"{GPX}trk")
    assert [t.findtext(f"{GPX}name") for t in tracks] == [str(A), str(B), str(C)]
    for trk, group in zip(tracks, ([0, 1, 2, 3, 4], [5], [6, 7, 8]), strict=True):
        segs = trk.findall(f"{GPX}trkseg")
        assert len(segs) == 1
        pts = segs[0].findall(f"{GPX}trkpt")
        assert len(pts) == len(group)
        for el, i in zip(pts, group, strict=True):
            p = points()[i]
            assert float(el.get("lat", "nan")) == pytest.approx(p.latitude)
            assert float(el.get("lon", "nan")) == pytest.approx(p.longitude)
            assert [c.tag.removeprefix(GPX) for c in el] == ["time", "desc"]  # xsd order
            assert datetime.fromisoformat(el.findtext(f"{GPX}time", "")) == p.report_time
    assert "odd" in ET.tostring(root).decode()  # the odd source escaped, not breaking XML


class FakeSource:
    """Rows in memory; counts the pages handed out."""

    def __init__(self, pts: list[ExportPoint], chs: list[ExportChange]) -> None:
        self.pts, self.chs, self.pages, self.opened = pts, chs, 0, 0

    async def run_client(self, production_run_id: uuid.UUID) -> uuid.UUID | None:
        return CLIENT if production_run_id == RUN else None

    async def tracker_run(self, tracker_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID] | None:
        return (CLIENT, RUN) if tracker_id in (A, B, C) else None

    @asynccontextmanager
    async def open(self, query: ExportQuery) -> AsyncIterator[FakeSource]:
        self.query = query
        self.opened += 1
        yield self

    async def _paged(self, rows: list, n: int) -> AsyncIterator[list]:  # type: ignore[type-arg]
        for i in range(0, len(rows), n):
            self.pages += 1
            yield rows[i : i + n]

    def changes(self, page_rows: int) -> AsyncIterator[list[ExportChange]]:
        return self._paged(self.chs, page_rows)

    def points(self, page_rows: int) -> AsyncIterator[list[ExportPoint]]:
        pts = [p for p in self.pts if self.query.tracker_id in (None, p.tracker_id)]
        return self._paged(pts, page_rows)

    async def fences(self, production_run_id: uuid.UUID) -> list[Fence]:
        return [Fence("Depot", "STORAGE", 48.1, 11.5, 300.0)]


def member(client: uuid.UUID) -> Principal:
    return Principal(uuid.uuid4(), memberships={client: Role.VIEWER})


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


async def test_the_stream_is_read_in_pages_and_written_in_chunks() -> None:
    many = [
        ExportPoint(A, T0 + timedelta(seconds=i), 10 + i * 1e-5, 20.0, 10, 3, "findmy")
        for i in range(10_000)
    ]
    source = FakeSource(many, changes())
    uc = HistoryExports(source, page_rows=700, chunk_bytes=16 * 1024)
    q = ExportQuery(ExportFormat.CSV, production_run_id=RUN, include_status_changes=True)
    chunks = await collect(await uc.export(member(CLIENT), q))
    assert source.opened == 1
    assert source.pages == 1 + -(-10_000 // 700)  # one page of changes, then 15 of reports
    assert len(chunks) > 10
    assert all(len(c) < 16 * 1024 + 200 for c in chunks)  # a chunk: about chunk_bytes
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline="")))
    assert len(rows) == 1 + 2 + 10_000
    assert source.query.min_confidence == 2  # the default filled in


async def test_a_tracker_or_run_of_another_client_looks_missing() -> None:
    uc = HistoryExports(FakeSource(points(), changes()))
    outsider = member(OTHER)
    for q, missing in (
        (
            ExportQuery(ExportFormat.GPX, tracker_id=A),
            ExportQuery(ExportFormat.GPX, tracker_id=uuid.uuid4()),
        ),
        (
            ExportQuery(ExportFormat.GPX, production_run_id=RUN),
            ExportQuery(ExportFormat.GPX, production_run_id=uuid.uuid4()),
        ),
    ):
        with pytest.raises(NotFound) as hidden:
            await uc.export(outsider, q)
        with pytest.raises(NotFound) as absent:
            await uc.export(outsider, missing)
        ident = str(q.tracker_id or q.production_run_id)
        other = str(missing.tracker_id or missing.production_run_id)
        assert str(hidden.value).replace(ident, "X") == str(absent.value).replace(other, "X")
    text = b"".join(
        await collect(await uc.export(member(CLIENT), ExportQuery(ExportFormat.CSV, tracker_id=B)))
    )
    assert text.decode().count("\r\nreport,") == 1


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (ExportQuery(ExportFormat.CSV), "tracker_id"),
        (ExportQuery(ExportFormat.CSV, tracker_id=A, production_run_id=RUN), "tracker_id"),
        (ExportQuery(ExportFormat.CSV, tracker_id=A, min_confidence=4), "min_confidence"),
        (ExportQuery(ExportFormat.CSV, tracker_id=A, min_confidence=-1), "min_confidence"),
        (ExportQuery(ExportFormat.CSV, tracker_id=A, start_time=T0, end_time=T0), "end_time"),
        (
            ExportQuery(ExportFormat.CSV, tracker_id=A, start_time=datetime(1, 1, 1, tzinfo=UTC)),
            "start_time",
        ),
    ],
)
async def test_bad_queries_name_the_field_before_any_data(query: ExportQuery, field: str) -> None:
    source = FakeSource(points(), changes())
    with pytest.raises(InvalidArgument) as err:
        await HistoryExports(source).export(Principal.system(), query)
    assert err.value.violations[0].field == field
    assert source.opened == 0


async def test_a_track_has_the_points_changes_and_fences_of_its_run() -> None:
    uc = HistoryExports(FakeSource(points(), changes()))
    track = await uc.track(member(CLIENT), A)
    assert [p.tracker_id for p in track.points] == [A] * 5
    assert len(track.changes) == 2
    assert track.fences[0].name == "Depot"
    with pytest.raises(NotFound):
        await uc.track(member(OTHER), A)


def test_characters_xml_cannot_carry_do_not_break_the_gpx() -> None:
    w = writer_for(ExportFormat.GPX)
    odd = ExportPoint(A, T0, 1.0, 2.0, 5, 2, "bell\x07<&>\x00nul")
    root = ET.fromstring((w.begin() + w.point(odd) + w.end()).encode())
    desc = root.findtext(f"{GPX}trk/{GPX}trkseg/{GPX}trkpt/{GPX}desc")
    assert desc is not None
    assert "bell\ufffd<&>\ufffdnul" in desc
