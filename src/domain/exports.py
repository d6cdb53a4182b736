"""Exports of location and status history (issue 17, deliverable 5): what an export asks
for, the rows it carries, and the writers that turn rows into CSV (RFC 4180), GeoJSON
(RFC 7946) and GPX 1.1 text one row at a time, so that an export is written as it is read
and never held whole in memory.

A writer's state is bounded: the tracker being written, its first and last point, and a
count. The order of an export: status changes first (when asked for; GPX requires its
waypoints before its tracks), then the reports, each part ordered by tracker and time.
"""

from __future__ import annotations

import csv
import enum
import io
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from domain.errors import InvalidArgument
from domain.history import check_time_range
from domain.status import CONFIDENCE_LEVELS, DEFAULT_MIN_CONFIDENCE


class ExportFormat(enum.Enum):
    CSV = "CSV"
    GEOJSON = "GEOJSON"
    GPX = "GPX"


CONTENT_TYPES = {
    ExportFormat.CSV: "text/csv; charset=utf-8",
    ExportFormat.GEOJSON: "application/geo+json",
    ExportFormat.GPX: "application/gpx+xml",
}
FILE_SUFFIXES = {
    ExportFormat.CSV: ".csv",
    ExportFormat.GEOJSON: ".geojson",
    ExportFormat.GPX: ".gpx",
}


@dataclass(frozen=True, slots=True)
class ExportQuery:
    """One production run's or one tracker's history (exactly one of the two)."""

    format: ExportFormat
    tracker_id: uuid.UUID | None = None
    production_run_id: uuid.UUID | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    min_confidence: int = 0  # 0: the default (as for location history)
    include_status_changes: bool = False

    def checked(self) -> ExportQuery:
        """The query with its defaults filled in; InvalidArgument names a bad field."""
        if (self.tracker_id is None) == (self.production_run_id is None):
            raise InvalidArgument("tracker_id", "set exactly one of tracker_id, production_run_id")
        check_time_range(self.start_time, self.end_time)
        confidence = self.min_confidence or DEFAULT_MIN_CONFIDENCE
        if confidence not in CONFIDENCE_LEVELS:
            raise InvalidArgument(
                "min_confidence", f"must be 1, 2 or 3 (0: the default, {DEFAULT_MIN_CONFIDENCE})"
            )
        return ExportQuery(
            self.format,
            self.tracker_id,
            self.production_run_id,
            self.start_time,
            self.end_time,
            confidence,
            self.include_status_changes,
        )


@dataclass(frozen=True, slots=True)
class ExportPoint:
    """One stored report."""

    tracker_id: uuid.UUID
    report_time: datetime
    latitude: float
    longitude: float
    horizontal_accuracy_m: int
    confidence: int
    source: str


@dataclass(frozen=True, slots=True)
class ExportChange:
    """One status change, where the report that made it was."""

    tracker_id: uuid.UUID
    report_time: datetime
    latitude: float
    longitude: float
    status: str
    previous_status: str | None


@dataclass(frozen=True, slots=True)
class Fence:
    """A storage or delivery location of a run: its geofence."""

    name: str
    kind: str  # "STORAGE" or "DELIVERY"
    latitude: float
    longitude: float
    radius_m: float


def timestamp(t: datetime) -> str:
    """RFC 3339 / xsd:dateTime in UTC with a Z."""
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


_NOT_XML = dict.fromkeys(
    [c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)] + [0xFFFE, 0xFFFF], "\ufffd"
)


def xml_text(value: str) -> str:
    """Text escaped for XML 1.0, characters XML cannot carry (control characters other than
    tab, line feed and carriage return) replaced by U+FFFD: a source or name may hold them."""
    return escape(value.translate(_NOT_XML))


def _coord(value: float) -> str:
    return f"{value:.7f}".rstrip("0").rstrip(".") if value else "0"


class ExportWriter:
    """Turns rows into text; each method returns the text to append (maybe empty)."""

    def begin(self) -> str:
        return ""

    def change(self, c: ExportChange) -> str:
        raise NotImplementedError

    def point(self, p: ExportPoint) -> str:
        raise NotImplementedError

    def end(self) -> str:
        return ""


CSV_HEADER = (
    "record",
    "tracker_id",
    "time",
    "latitude",
    "longitude",
    "horizontal_accuracy_m",
    "confidence",
    "source",
    "status",
    "previous_status",
)


class CsvWriter(ExportWriter):
    """RFC 4180: a header, CRLF line ends, fields quoted when they need it. ``record`` is
    ``report`` or ``status_change``."""

    def __init__(self) -> None:
        self._buf = io.StringIO()
        self._csv = csv.writer(self._buf, lineterminator="\r\n")

    def _row(self, row: tuple[object, ...]) -> str:
        self._buf.seek(0)
        self._buf.truncate()
        self._csv.writerow(row)
        return self._buf.getvalue()

    def begin(self) -> str:
        return self._row(CSV_HEADER)

    def change(self, c: ExportChange) -> str:
        return self._row(
            (
                "status_change",
                c.tracker_id,
                timestamp(c.report_time),
                _coord(c.latitude),
                _coord(c.longitude),
                "",
                "",
                "",
                c.status,
                c.previous_status or "",
            )
        )

    def point(self, p: ExportPoint) -> str:
        return self._row(
            (
                "report",
                p.tracker_id,
                timestamp(p.report_time),
                _coord(p.latitude),
                _coord(p.longitude),
                p.horizontal_accuracy_m,
                p.confidence,
                p.source,
                "",
                "",
            )
        )


class _Tracks(ExportWriter):
    """Rows arrive ordered by tracker: a writer opens a track on a tracker's first point and
    closes it on the next tracker's (or at the end), keeping only that tracker's first and
    last point."""

    def __init__(self) -> None:
        self._first: ExportPoint | None = None
        self._last: ExportPoint | None = None
        self._count = 0

    def point(self, p: ExportPoint) -> str:
        out = ""
        if self._first is not None and p.tracker_id != self._first.tracker_id:
            out = self._close()
        if self._first is None:
            self._first, self._count = p, 0
        self._count += 1
        out += self._add(p)
        self._last = p
        return out

    def _close(self) -> str:
        assert self._first is not None
        assert self._last is not None
        out = self._finish(self._first, self._last, self._count)
        self._first = self._last = None
        return out

    def end(self) -> str:
        return (self._close() if self._first is not None else "") + self._tail()

    def _add(self, p: ExportPoint) -> str:
        raise NotImplementedError

    def _finish(self, first: ExportPoint, last: ExportPoint, count: int) -> str:
        raise NotImplementedError

    def _tail(self) -> str:
        raise NotImplementedError


class GeoJsonWriter(_Tracks):
    """RFC 7946 FeatureCollection ([longitude, latitude] positions): a Point feature per
    status change; per tracker a LineString of its reports in time order (a Point if it has
    one report) with its tracker id, first and last time and count, and Point features
    marking its first and last report."""

    def __init__(self) -> None:
        super().__init__()
        self._features = 0

    def _feature(self, geometry: str, properties: dict[str, object]) -> str:
        sep = ",\n" if self._features else "\n"
        self._features += 1
        return (
            f'{sep}{{"type":"Feature","geometry":{geometry},"properties":{json.dumps(properties)}}}'
        )

    @staticmethod
    def _pos(lat: float, lon: float) -> str:
        return f"[{_coord(lon)},{_coord(lat)}]"

    def begin(self) -> str:
        return '{"type":"FeatureCollection","features":['

    def change(self, c: ExportChange) -> str:
        return self._feature(
            f'{{"type":"Point","coordinates":{self._pos(c.latitude, c.longitude)}}}',
            {
                "kind": "status_change",
                "tracker_id": str(c.tracker_id),
                "time": timestamp(c.report_time),
                "status": c.status,
                "previous_status": c.previous_status,
            },
        )

    def _add(self, p: ExportPoint) -> str:
        pos = self._pos(p.latitude, p.longitude)
        if self._count == 1:
            return ""  # held (as self._first) until a second point makes it a line
        if self._count == 2:
            assert self._first is not None
            sep = ",\n" if self._features else "\n"
            self._features += 1
            first = self._pos(self._first.latitude, self._first.longitude)
            line = '{"type":"Feature","geometry":{"type":"LineString","coordinates":['
            return f"{sep}{line}{first},{pos}"
        return f",{pos}"

    def _point_feature(self, p: ExportPoint, kind: str) -> str:
        return self._feature(
            f'{{"type":"Point","coordinates":{self._pos(p.latitude, p.longitude)}}}',
            {
                "kind": kind,
                "tracker_id": str(p.tracker_id),
                "time": timestamp(p.report_time),
                "horizontal_accuracy_m": p.horizontal_accuracy_m,
                "confidence": p.confidence,
                "source": p.source,
            },
        )

    def _finish(self, first: ExportPoint, last: ExportPoint, count: int) -> str:
        if count == 1:
            return self._point_feature(first, "only_report")
        props = {
            "kind": "track",
            "tracker_id": str(first.tracker_id),
            "first_time": timestamp(first.report_time),
            "last_time": timestamp(last.report_time),
            "report_count": count,
        }
        return (
            f']}},"properties":{json.dumps(props)}}}'
            + self._point_feature(first, "first_report")
            + self._point_feature(last, "last_report")
        )

    def _tail(self) -> str:
        return "\n]}\n"


GPX_NS = "http://www.topografix.com/GPX/1/1"


class GpxWriter(_Tracks):
    """GPX 1.1: a waypoint (``wpt``, type ``status_change``) per status change, then one
    ``trk`` per tracker (named by its id) with one ``trkseg`` of ``trkpt lat lon`` with
    ``time``; the accuracy and confidence go in the point's ``desc``."""

    def begin(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<gpx version="1.1" creator="tracker-services" xmlns="{GPX_NS}">\n'
        )

    @staticmethod
    def _at(lat: float, lon: float) -> str:
        return f"lat={quoteattr(_coord(lat))} lon={quoteattr(_coord(lon))}"

    def change(self, c: ExportChange) -> str:
        desc = f"tracker {c.tracker_id}: {c.previous_status or 'none'} -> {c.status}"
        return (
            f"<wpt {self._at(c.latitude, c.longitude)}><time>{timestamp(c.report_time)}</time>"
            f"<name>{xml_text(c.status)}</name><desc>{xml_text(desc)}</desc>"
            "<type>status_change</type></wpt>\n"
        )

    def _add(self, p: ExportPoint) -> str:
        head = ""
        if self._count == 1:
            head = f"<trk><name>{p.tracker_id}</name><trkseg>\n"
        desc = f"accuracy {p.horizontal_accuracy_m} m, confidence {p.confidence}, {p.source}"
        return (
            f"{head}<trkpt {self._at(p.latitude, p.longitude)}>"
            f"<time>{timestamp(p.report_time)}</time><desc>{xml_text(desc)}</desc></trkpt>\n"
        )

    def _finish(self, first: ExportPoint, last: ExportPoint, count: int) -> str:
        return "</trkseg></trk>\n"

    def _tail(self) -> str:
        return "</gpx>\n"


def writer_for(fmt: ExportFormat) -> ExportWriter:
    return {
        ExportFormat.CSV: CsvWriter,
        ExportFormat.GEOJSON: GeoJsonWriter,
        ExportFormat.GPX: GpxWriter,
    }[fmt]()
