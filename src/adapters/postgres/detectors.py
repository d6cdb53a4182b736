"""Detectors, links, sightings, statuses and travel times in PostgreSQL (migration 0014).

Sightings are written like reports (``adapters.postgres.reports``): one binary COPY built
from arrays into a per-connection staging table, then one INSERT ... ON CONFLICT DO NOTHING
(idempotent). Each row keeps the id of the inserting transaction (``xid``), which is what
``PostgresFeed`` follows: the rows visible in a new snapshot but not in the previous one are
exactly the rows committed in between, each once, whatever order transactions commit in.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np

from adapters.postgres.events import MAX_CURSOR_LENGTH, valid_snapshot
from adapters.postgres.pool import unavailable_on_connection_error
from domain.detectors import Detector, DetectorEvent, DetectorStatusReading, Link, Radio
from domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from domain.model import GeoPoint
from domain.pagination import (
    Page,
    PageRequest,
    cursor_id,
    cursor_parts,
    cursor_time,
)
from domain.ports.detectors import (
    Detection,
    DetectorFilter,
    EventFilter,
    SightingRows,
    TravelTimeBin,
    TravelTimeFilter,
    WorkItem,
)
from domain.reports import from_us, to_us

_MIN_UUID = uuid.UUID(int=0)
_NEG_INF = datetime(1, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_DETECTOR_COLUMNS = (
    "id, client_id, display_name, latitude, longitude, radios, range_m, create_time, update_time"
)


def _detector(r: asyncpg.Record) -> Detector:
    return Detector(
        id=r["id"],
        client_id=r["client_id"],
        display_name=r["display_name"],
        position=GeoPoint(r["latitude"], r["longitude"]),
        radios=tuple(Radio(x) for x in r["radios"]),
        range_m=r["range_m"],
        create_time=r["create_time"],
        update_time=r["update_time"],
    )


def _visible(v: frozenset[uuid.UUID] | None) -> list[uuid.UUID] | None:
    return None if v is None else list(v)


class PostgresDetectorRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, d: Detector) -> None:
        await self._conn.execute(
            f"INSERT INTO detectors ({_DETECTOR_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, "
            "$8, $9)",
            d.id,
            d.client_id,
            d.display_name,
            d.position.latitude,
            d.position.longitude,
            [int(r) for r in d.radios],
            d.range_m,
            d.create_time,
            d.update_time,
        )

    async def get(self, detector_id: uuid.UUID) -> Detector | None:
        row = await self._conn.fetchrow(
            f"SELECT {_DETECTOR_COLUMNS} FROM detectors WHERE id = $1", detector_id
        )
        return None if row is None else _detector(row)

    async def get_many(self, ids: Sequence[uuid.UUID]) -> list[Detector]:
        rows = await self._conn.fetch(
            f"SELECT {_DETECTOR_COLUMNS} FROM detectors WHERE id = ANY($1::uuid[])", list(ids)
        )
        return [_detector(r) for r in rows]

    async def update(self, d: Detector) -> None:
        await self._conn.execute(
            "UPDATE detectors SET display_name = $2, latitude = $3, longitude = $4, radios = $5, "
            "range_m = $6, update_time = $7 WHERE id = $1",
            d.id,
            d.display_name,
            d.position.latitude,
            d.position.longitude,
            [int(r) for r in d.radios],
            d.range_m,
            d.update_time,
        )

    async def delete(self, detector_id: uuid.UUID) -> None:
        await self._conn.execute("DELETE FROM sightings WHERE detector_id = $1", detector_id)
        await self._conn.execute("DELETE FROM detectors WHERE id = $1", detector_id)

    async def list(self, filter: DetectorFilter, page: PageRequest) -> Page[Detector]:
        after = cursor_id(page.after) if page.after is not None else _MIN_UUID
        rows = await self._conn.fetch(
            f"""SELECT {_DETECTOR_COLUMNS} FROM detectors
                WHERE ($1::uuid IS NULL OR client_id = $1)
                  AND ($2::uuid[] IS NULL OR client_id = ANY($2))
                  AND id > $3
                ORDER BY id LIMIT $4""",
            filter.client_id,
            _visible(filter.visible_clients),
            after,
            page.size + 1,
        )
        items = [_detector(r) for r in rows[: page.size]]
        return Page(items, str(items[-1].id) if len(rows) > page.size else None)

    async def trackers_heard(
        self, client_id: uuid.UUID, macs: Sequence[str]
    ) -> dict[str, uuid.UUID]:
        rows = await self._conn.fetch(
            "SELECT mac_address, id FROM trackers WHERE client_id = $1 "
            "AND mac_address = ANY($2::text[])",
            client_id,
            list(macs),
        )
        return {r["mac_address"]: r["id"] for r in rows}


def _link(r: asyncpg.Record) -> Link:
    return Link(
        destination_id=r["destination_id"],
        source_id=r["source_id"],
        client_id=r["client_id"],
        max_seconds=r["max_seconds"],
        create_time=r["create_time"],
        update_time=r["update_time"],
    )


_LINK_COLUMNS = "destination_id, source_id, client_id, max_seconds, create_time, update_time"


class PostgresLinkRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, link: Link) -> None:
        try:
            await self._conn.execute(
                f"INSERT INTO detector_links ({_LINK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                link.destination_id,
                link.source_id,
                link.client_id,
                link.max_seconds,
                link.create_time,
                link.update_time,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("link", "link", f"{link.destination_id}/{link.source_id}") from None
        await self._conn.execute(
            "INSERT INTO travel_time_work (destination_id) VALUES ($1) ON CONFLICT DO NOTHING",
            link.destination_id,
        )

    async def get(self, destination_id: uuid.UUID, source_id: uuid.UUID) -> Link | None:
        row = await self._conn.fetchrow(
            f"SELECT {_LINK_COLUMNS} FROM detector_links "
            "WHERE destination_id = $1 AND source_id = $2",
            destination_id,
            source_id,
        )
        return None if row is None else _link(row)

    async def update(self, link: Link) -> None:
        await self._conn.execute(
            "UPDATE detector_links SET max_seconds = $3, update_time = $4 "
            "WHERE destination_id = $1 AND source_id = $2",
            link.destination_id,
            link.source_id,
            link.max_seconds,
            link.update_time,
        )

    async def delete(self, destination_id: uuid.UUID, source_id: uuid.UUID) -> None:
        await self._conn.execute(
            "DELETE FROM detector_links WHERE destination_id = $1 AND source_id = $2",
            destination_id,
            source_id,
        )

    async def list(
        self,
        destination_id: uuid.UUID | None,
        visible: frozenset[uuid.UUID] | None,
        page: PageRequest,
    ) -> Page[Link]:
        if page.after is None:
            dest, src = _MIN_UUID, _MIN_UUID
        else:
            a, b = cursor_parts(page.after, 2)
            dest, src = cursor_id(a), cursor_id(b)
        rows = await self._conn.fetch(
            f"""SELECT {_LINK_COLUMNS} FROM detector_links
                WHERE ($1::uuid IS NULL OR destination_id = $1)
                  AND ($2::uuid[] IS NULL OR client_id = ANY($2))
                  AND (destination_id, source_id) > ($3, $4)
                ORDER BY destination_id, source_id LIMIT $5""",
            destination_id,
            _visible(visible),
            dest,
            src,
            page.size + 1,
        )
        items = [_link(r) for r in rows[: page.size]]
        nxt = None
        if len(rows) > page.size:
            nxt = f"{items[-1].destination_id}|{items[-1].source_id}"
        return Page(items, nxt)

    async def into(self, destination_id: uuid.UUID) -> list[Link]:
        rows = await self._conn.fetch(
            f"SELECT {_LINK_COLUMNS} FROM detector_links WHERE destination_id = $1 "
            "ORDER BY source_id",
            destination_id,
        )
        return [_link(r) for r in rows]


# The binary COPY of sightings: fixed-width tuples, big-endian; an unknown RSSI travels as
# -32768 and is stored as NULL.
_PG_EPOCH_US = 946_684_800_000_000
_NO_RSSI = -32768
_FIELDS = [
    ("detector_id", "V16"),
    ("seen_time", ">i8"),
    ("device_key", "V16"),
    ("key_id", ">i2"),
    ("rssi_dbm", ">i2"),
    ("radio", ">i2"),
]
_FIELD_SIZES = {f"len_{name}": np.dtype(kind).itemsize for name, kind in _FIELDS}
_ROW = np.dtype(
    [("count", ">i2")]
    + [x for name, kind in _FIELDS for x in ((f"len_{name}", ">i4"), (name, kind))]
)
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_COPY_TRAILER = b"\xff\xff"
_ROWS_TABLE = (
    "CREATE TEMP TABLE IF NOT EXISTS sightings_rows (detector_id uuid, seen_time timestamptz, "
    "device_key bytea, key_id smallint, rssi_dbm smallint, radio smallint) "
    "ON COMMIT DELETE ROWS; DELETE FROM sightings_rows"
)
_INSERT_ROWS = (
    "INSERT INTO sightings (detector_id, seen_time, device_key, key_id, rssi_dbm, radio) "
    f"SELECT detector_id, seen_time, device_key, key_id, NULLIF(rssi_dbm, {_NO_RSSI}), radio "
    "FROM sightings_rows ON CONFLICT DO NOTHING"
)
_EVENT_COLUMNS = "detector_id, seen_time, device_key, key_id, rssi_dbm, radio"


def _event(r: asyncpg.Record) -> DetectorEvent:
    return DetectorEvent(
        detector_id=r["detector_id"],
        device_key=bytes(r["device_key"]),
        key_id=r["key_id"],
        seen_time=r["seen_time"],
        rssi_dbm=r["rssi_dbm"],
        radio=Radio(r["radio"]),
    )


def _reading(r: asyncpg.Record) -> DetectorStatusReading:
    return DetectorStatusReading(
        r["detector_id"],
        r["report_time"],
        r["battery_voltage"],
        r["bluetooth_count"],
        r["wifi_count"],
    )


class PostgresSightingRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_rows(self, rows: SightingRows) -> int:
        n = len(rows)
        if not n:
            return 0
        tuples = np.zeros(n, dtype=_ROW)
        for name, size in _FIELD_SIZES.items():
            tuples[name] = size
        tuples["count"] = len(_FIELD_SIZES)
        tuples["detector_id"] = np.frombuffer(rows.detector_id.bytes * n, dtype="V16")
        tuples["seen_time"] = np.array(rows.times_us, dtype=np.int64) - _PG_EPOCH_US
        tuples["device_key"] = np.frombuffer(b"".join(rows.device_keys), dtype="V16")
        tuples["key_id"] = rows.key_id
        tuples["rssi_dbm"] = [_NO_RSSI if r is None else r for r in rows.rssi]
        tuples["radio"] = rows.radios
        await self._conn.execute(_ROWS_TABLE)
        await self._conn.copy_to_table(
            "sightings_rows",
            source=memoryview(b"".join((_COPY_HEADER, tuples.tobytes(), _COPY_TRAILER))),
            format="binary",
        )
        status = await self._conn.execute(_INSERT_ROWS)
        return int(status.rsplit(" ", 1)[1])

    async def add_status(self, reading: DetectorStatusReading) -> bool:
        status = await self._conn.execute(
            "INSERT INTO detector_statuses (detector_id, report_time, battery_voltage, "
            "bluetooth_count, wifi_count) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            reading.detector_id,
            reading.report_time,
            reading.battery_voltage,
            reading.bluetooth_count,
            reading.wifi_count,
        )
        return status.endswith(" 1")

    async def events(self, filter: EventFilter, page: PageRequest) -> Page[DetectorEvent]:
        """Ordered by detector, time and device key (the primary key: a keyset scan)."""
        if page.after is None:
            det, t, key = _MIN_UUID, _NEG_INF, b""
        else:
            a, b, c = cursor_parts(page.after, 3)
            det, t = cursor_id(a), cursor_time(b)
            try:
                key = bytes.fromhex(c)
            except ValueError:
                raise InvalidArgument(
                    "page_token", "page token cursor out of range (key)"
                ) from None
        rows = await self._conn.fetch(
            f"""SELECT {", ".join("s." + c for c in _EVENT_COLUMNS.split(", "))}
                FROM sightings s JOIN detectors d ON d.id = s.detector_id
                WHERE (cardinality($1::uuid[]) = 0 OR s.detector_id = ANY($1))
                  AND ($2::timestamptz IS NULL OR s.seen_time >= $2)
                  AND ($3::timestamptz IS NULL OR s.seen_time < $3)
                  AND ($4::uuid[] IS NULL OR d.client_id = ANY($4))
                  AND (s.detector_id, s.seen_time, s.device_key) > ($5, $6, $7)
                ORDER BY s.detector_id, s.seen_time, s.device_key LIMIT $8""",
            list(filter.detector_ids),
            filter.start_time,
            filter.end_time,
            _visible(filter.visible_clients),
            det,
            t,
            key,
            page.size + 1,
        )
        items = [_event(r) for r in rows[: page.size]]
        nxt = None
        if len(rows) > page.size:
            last = items[-1]
            nxt = f"{last.detector_id}|{last.seen_time.isoformat()}|{last.device_key.hex()}"
        return Page(items, nxt)

    async def statuses(self, filter: EventFilter, page: PageRequest) -> Page[DetectorStatusReading]:
        if page.after is None:
            det, t = _MIN_UUID, _NEG_INF
        else:
            a, b = cursor_parts(page.after, 2)
            det, t = cursor_id(a), cursor_time(b)
        rows = await self._conn.fetch(
            """SELECT s.* FROM detector_statuses s JOIN detectors d ON d.id = s.detector_id
                WHERE (cardinality($1::uuid[]) = 0 OR s.detector_id = ANY($1))
                  AND ($2::timestamptz IS NULL OR s.report_time >= $2)
                  AND ($3::timestamptz IS NULL OR s.report_time < $3)
                  AND ($4::uuid[] IS NULL OR d.client_id = ANY($4))
                  AND (s.detector_id, s.report_time) > ($5, $6)
                ORDER BY s.detector_id, s.report_time LIMIT $7""",
            list(filter.detector_ids),
            filter.start_time,
            filter.end_time,
            _visible(filter.visible_clients),
            det,
            t,
            page.size + 1,
        )
        items = [_reading(r) for r in rows[: page.size]]
        nxt = None
        if len(rows) > page.size:
            nxt = f"{items[-1].detector_id}|{items[-1].report_time.isoformat()}"
        return Page(items, nxt)

    async def detections(
        self, detector_ids: Sequence[uuid.UUID], start: datetime, end: datetime
    ) -> list[Detection]:
        rows = await self._conn.fetch(
            """SELECT detector_id, device_key,
                      extract(epoch FROM seen_time)::float8 AS seen_s, rssi_dbm
               FROM sightings
               WHERE detector_id = ANY($1::uuid[]) AND seen_time >= $2 AND seen_time < $3""",
            list(detector_ids),
            start,
            end,
        )
        return [Detection(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    async def earliest(self, detector_id: uuid.UUID) -> datetime | None:
        value: datetime | None = await self._conn.fetchval(
            "SELECT min(seen_time) FROM sightings WHERE detector_id = $1", detector_id
        )
        return value


_BIN_COLUMNS = (
    "destination_id, source_id, bin_start, bin_seconds, estimate_s, p10_s, p90_s, used_count, "
    "rejected_count, mean_s, update_time"
)


def _bin(r: asyncpg.Record) -> TravelTimeBin:
    return TravelTimeBin(
        destination_id=r["destination_id"],
        source_id=r["source_id"],
        bin_start=r["bin_start"],
        bin_seconds=r["bin_seconds"],
        estimate_s=r["estimate_s"],
        p10_s=r["p10_s"],
        p90_s=r["p90_s"],
        used=r["used_count"],
        rejected=r["rejected_count"],
        mean_s=r["mean_s"],
        update_time=r["update_time"],
    )


class PostgresTravelTimeRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def claim(self, owner: str, now: datetime, lease_s: float, limit: int) -> list[WorkItem]:
        rows = await self._conn.fetch(
            """UPDATE travel_time_work w SET lease_owner = $1, lease_until = $2 + $3::interval
               FROM (SELECT destination_id FROM travel_time_work
                     WHERE due_time <= $2 AND (lease_until IS NULL OR lease_until < $2)
                     ORDER BY due_time, destination_id LIMIT $4
                     FOR UPDATE SKIP LOCKED) c
               WHERE w.destination_id = c.destination_id
               RETURNING w.destination_id, w.done_until""",
            owner,
            now,
            timedelta(seconds=lease_s),
            limit,
        )
        return [WorkItem(r[0], r[1]) for r in rows]

    async def complete(
        self, owner: str, destination_id: uuid.UUID, done_until: datetime, due: datetime
    ) -> bool:
        status = await self._conn.execute(
            """UPDATE travel_time_work SET done_until = $3, due_time = $4, lease_owner = NULL,
                      lease_until = NULL
               WHERE destination_id = $2 AND lease_owner = $1""",
            owner,
            destination_id,
            done_until,
            due,
        )
        return status.endswith(" 1")

    async def save(self, bins: Sequence[TravelTimeBin]) -> None:
        await self._conn.executemany(
            f"""INSERT INTO travel_times ({_BIN_COLUMNS})
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                ON CONFLICT (destination_id, source_id, bin_start) DO UPDATE SET
                  bin_seconds = excluded.bin_seconds, estimate_s = excluded.estimate_s,
                  p10_s = excluded.p10_s, p90_s = excluded.p90_s,
                  used_count = excluded.used_count, rejected_count = excluded.rejected_count,
                  mean_s = excluded.mean_s, update_time = excluded.update_time,
                  xid = pg_current_xact_id()
                WHERE (travel_times.estimate_s, travel_times.p10_s, travel_times.p90_s,
                       travel_times.used_count, travel_times.rejected_count,
                       travel_times.mean_s)
                      IS DISTINCT FROM (excluded.estimate_s, excluded.p10_s, excluded.p90_s,
                       excluded.used_count, excluded.rejected_count, excluded.mean_s)""",
            [
                (
                    b.destination_id,
                    b.source_id,
                    b.bin_start,
                    b.bin_seconds,
                    b.estimate_s,
                    b.p10_s,
                    b.p90_s,
                    b.used,
                    b.rejected,
                    b.mean_s,
                    b.update_time,
                )
                for b in bins
            ],
        )

    async def list(self, filter: TravelTimeFilter, page: PageRequest) -> Page[TravelTimeBin]:
        if page.after is None:
            dest, src, t = _MIN_UUID, _MIN_UUID, _NEG_INF
        else:
            a, b, c = cursor_parts(page.after, 3)
            dest, src, t = cursor_id(a), cursor_id(b), cursor_time(c)
        rows = await self._conn.fetch(
            f"""SELECT {", ".join("t." + c for c in _BIN_COLUMNS.split(", "))}
                FROM travel_times t JOIN detectors d ON d.id = t.destination_id
                WHERE ($1::uuid IS NULL OR t.destination_id = $1)
                  AND ($2::uuid IS NULL OR t.source_id = $2)
                  AND ($3::timestamptz IS NULL OR t.bin_start >= $3)
                  AND ($4::timestamptz IS NULL OR t.bin_start < $4)
                  AND ($5::uuid[] IS NULL OR d.client_id = ANY($5))
                  AND (t.destination_id, t.source_id, t.bin_start) > ($6, $7, $8)
                ORDER BY t.destination_id, t.source_id, t.bin_start LIMIT $9""",
            filter.destination_id,
            filter.source_id,
            filter.start_time,
            filter.end_time,
            _visible(filter.visible_clients),
            dest,
            src,
            t,
            page.size + 1,
        )
        items = [_bin(r) for r in rows[: page.size]]
        nxt = None
        if len(rows) > page.size:
            last = items[-1]
            nxt = f"{last.destination_id}|{last.source_id}|{last.bin_start.isoformat()}"
        return Page(items, nxt)

    async def latest(self, destination_id: uuid.UUID) -> list[TravelTimeBin]:
        rows = await self._conn.fetch(
            f"""SELECT DISTINCT ON (source_id) {_BIN_COLUMNS} FROM travel_times
                WHERE destination_id = $1 AND estimate_s IS NOT NULL
                ORDER BY source_id, bin_start DESC""",
            destination_id,
        )
        return [_bin(r) for r in rows]


FEED_CURSOR_FIELD = "after_cursor"
_XID = r"\d{1,19}"
_INT64_MAX = 2**63 - 1
# The newest sighting deleted by retention (0030) not yet read through the position (neither
# visible in its settled snapshot nor, in its upper one, in a transaction before the last
# one read): resuming would skip it. A position inside the last read transaction is
# refused too (the mark has no finer key).
_SIGHTINGS_EXPIRED = """
    SELECT NOT pg_visible_in_snapshot(pruned_xid, $1::text::pg_snapshot)
       AND ($2 = '' OR NOT (pg_visible_in_snapshot(pruned_xid, nullif($2, '')::pg_snapshot)
                            AND pruned_xid < $3::text::xid8))
    FROM retention_marks WHERE kind = 'sightings'
"""


@dataclass(frozen=True, slots=True)
class FeedPosition:
    """``settled``: every row visible in this snapshot was read. With ``upto``: of the rows
    visible in that snapshot and not in ``settled``, those up to ``last`` (xid, detector,
    seen time in microseconds, device key: the feed's order) were read too."""

    settled: str
    upto: str = ""
    last: tuple[int, uuid.UUID, int, bytes] | None = None


def encode_position(position: FeedPosition) -> str:
    parts = [position.settled]
    if position.upto and position.last is not None:
        xid, detector, us, key = position.last
        parts += [position.upto, str(xid), detector.hex, str(us), key.hex()]
    raw = "/".join(parts).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_position(cursor: str) -> FeedPosition:
    """A position handed out by ``PostgresFeed`` (INVALID_ARGUMENT on ``after_cursor`` for
    anything else)."""
    bad = InvalidArgument(
        FEED_CURSOR_FIELD, "not a cursor of this stream (take one from a stream's message)"
    )
    if len(cursor) > MAX_CURSOR_LENGTH or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise bad
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    parts = raw.split("/")
    if not all(valid_snapshot(p) for p in parts[:2]):
        raise bad
    if len(parts) == 1:
        return FeedPosition(parts[0])
    if len(parts) != 6:
        raise bad
    settled, upto, xid, detector, us, key = parts
    if not (
        re.fullmatch(_XID, xid)
        and re.fullmatch(r"[0-9a-f]{32}", detector)
        and re.fullmatch(r"-?\d{1,18}", us)
        and re.fullmatch(r"[0-9a-f]{32}", key)
        and int(xid) <= _INT64_MAX
    ):
        raise bad
    return FeedPosition(settled, upto, (int(xid), uuid.UUID(detector), int(us), bytes.fromhex(key)))


class PostgresFeed:
    """New rows as they are committed. A position (opaque to the caller: base64) is a
    PostgreSQL snapshot: the rows visible in the next snapshot and not in this one were
    committed in between; a poll that stops at its limit also records the upper snapshot and
    the last row read (``FeedPosition``). Each poll is one read-only REPEATABLE READ
    transaction, so the snapshot it records is the one its query saw (and, for sightings,
    the retention mark it checks is the one of the rows it reads)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def start(self) -> str:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                value: str = await conn.fetchval("SELECT pg_current_snapshot()::text")
        return encode_position(FeedPosition(value))

    async def _after(
        self, sql: str, position: FeedPosition, *args: Any, expired: str | None = None
    ) -> tuple[list[Any], str]:
        """Rows of ``sql`` ($1: the settled snapshot) and the transaction's own snapshot."""
        last_xid = str(position.last[0]) if position.last else "0"
        with unavailable_on_connection_error():
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                now: str = await conn.fetchval("SELECT pg_current_snapshot()::text")
                if expired is not None and await conn.fetchval(
                    expired, position.settled, position.upto, last_xid
                ):
                    raise FailedPrecondition(
                        f"the cursor ({FEED_CURSOR_FIELD}) is older than the sightings kept "
                        "(retention_sightings_days): sightings committed after it were "
                        "deleted; start again without a cursor",
                        FEED_CURSOR_FIELD,
                        kind="CURSOR_EXPIRED",
                    )
                rows = await conn.fetch(sql, position.settled, *args)
        return rows, now

    async def events_after(
        self, position: str, detector_ids: Sequence[uuid.UUID], limit: int
    ) -> tuple[list[DetectorEvent], str]:
        at = decode_position(position)
        args: list[Any] = [list(detector_ids)]
        where = [
            "detector_id = ANY($2::uuid[])",
            "xid >= pg_snapshot_xmin($1::text::pg_snapshot)",
            "NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)",
        ]
        if at.upto and at.last is not None:
            xid, detector, us, key = at.last
            args += [at.upto, str(xid), detector, from_us(us), key]
            where += [
                "pg_visible_in_snapshot(xid, $3::text::pg_snapshot)",
                "xid >= $4::text::xid8",
                "(xid, detector_id, seen_time, device_key) > ($4::text::xid8, $5, $6, $7)",
            ]
        rows, now = await self._after(
            f"""SELECT {_EVENT_COLUMNS}, xid::text AS xid_text FROM sightings
                WHERE {" AND ".join(where)}
                ORDER BY xid, detector_id, seen_time, device_key LIMIT {int(limit) + 1}""",
            at,
            *args,
            expired=_SIGHTINGS_EXPIRED,
        )
        events = [_event(r) for r in rows[:limit]]
        upto = at.upto or now
        if len(rows) <= limit:  # everything up to ``upto`` is read
            done = encode_position(FeedPosition(upto))
            if at.upto and len(events) < limit:  # go on past it (a short poll: caught up)
                more, done = await self.events_after(done, detector_ids, limit - len(events))
                return events + more, done
            return events, done
        r = rows[limit - 1]
        e = events[-1]
        last = (int(r["xid_text"]), e.detector_id, to_us(e.seen_time), e.device_key)
        return events, encode_position(FeedPosition(at.settled, upto, last))

    async def travel_times_after(
        self, position: str, destination_id: uuid.UUID
    ) -> tuple[list[TravelTimeBin], str]:
        """Every bin (re)computed since (positions from ``start`` and this: no upper part)."""
        rows, now = await self._after(
            f"""SELECT {_BIN_COLUMNS} FROM travel_times
                WHERE destination_id = $2
                  AND xid >= pg_snapshot_xmin($1::text::pg_snapshot)
                  AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
                ORDER BY xid, source_id, bin_start""",
            FeedPosition(decode_position(position).settled),
            destination_id,
        )
        return [_bin(r) for r in rows], encode_position(FeedPosition(now))
