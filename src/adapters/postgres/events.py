"""Events and webhooks in PostgreSQL (migration 0024). Events are written by triggers in the
transaction of the change they describe; a delivery row per webhook in the same transaction.

A stream cursor is a position between PostgreSQL snapshots (the technique of
``PostgresFeed``): ``S`` (everything visible in snapshot S has been read), optionally with
``N`` and an id (of the rows visible in N and not in S, those up to the id have been read).
Ids are taken in insert order but committed in any order; a row of a transaction still open
at S is not visible in S, so it is read when it commits, whatever its id."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.errors import FailedPrecondition, InvalidArgument, NotFound
from domain.events import (
    Delivery,
    DeliveryState,
    DueDelivery,
    Event,
    EventKind,
    NewWebhook,
    Webhook,
)
from domain.pagination import Page, PageRequest, cursor_parts
from domain.ports.events import DeliveryFilter, EventFilter

CURSOR_FIELD = "after_cursor"
MAX_CURSOR_LENGTH = 8192
_SNAPSHOT = re.compile(r"^(\d{1,19}):(\d{1,19}):((?:\d{1,19})(?:,\d{1,19})*)?$")
_INT64_MAX = 2**63 - 1

_EVENT_COLUMNS = (
    "e.id, e.client_id, e.kind, e.tracker_id, e.outage_id, e.occur_time, e.create_time, e.data"
)


# The newest event deleted by retention (0030) not yet read through the cursor (neither
# visible in its settled snapshot nor, in its upper one, at or before its last id): resuming
# would skip what was deleted.
_EXPIRED = """
    SELECT NOT pg_visible_in_snapshot(pruned_xid, $1::text::pg_snapshot)
    FROM retention_marks WHERE kind = 'events'
"""
_EXPIRED_WITHIN = """
    SELECT NOT pg_visible_in_snapshot(pruned_xid, $1::text::pg_snapshot)
       AND NOT (pg_visible_in_snapshot(pruned_xid, $2::text::pg_snapshot) AND pruned_id <= $3)
    FROM retention_marks WHERE kind = 'events'
"""


def _bad_cursor() -> InvalidArgument:
    return InvalidArgument(CURSOR_FIELD, "not a cursor of this API (take one from an event)")


def valid_snapshot(text: str) -> bool:
    """Whether ``text`` is a ``pg_snapshot`` PostgreSQL would accept (xmin:xmax:xip,...)."""
    m = _SNAPSHOT.match(text)
    if m is None:
        return False
    xmin, xmax = int(m.group(1)), int(m.group(2))
    xip = [int(x) for x in m.group(3).split(",")] if m.group(3) else []
    in_order = all(x <= y for x, y in itertools.pairwise(xip))  # as PostgreSQL requires
    return 1 <= xmin <= xmax <= _INT64_MAX and in_order and all(xmin <= x < xmax for x in xip)


def _snapshot(text: str) -> str:
    if not valid_snapshot(text):
        raise _bad_cursor()
    return text


def encode_cursor(settled: str, upto: str = "", last_id: int = 0) -> str:
    raw = f"{settled}/{upto}/{last_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str, int]:
    if len(cursor) > MAX_CURSOR_LENGTH or not re.fullmatch(r"[A-Za-z0-9_-]+", cursor):
        raise _bad_cursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_cursor() from None
    parts = raw.split("/")
    if len(parts) != 3 or not re.fullmatch(r"\d{1,19}", parts[2]):
        raise _bad_cursor()
    settled, upto, last = parts
    _snapshot(settled)
    last_id = int(last)
    if last_id > _INT64_MAX:
        raise _bad_cursor()
    if upto:
        _snapshot(upto)
    elif last_id:
        raise _bad_cursor()
    return settled, upto, last_id


def _event(r: asyncpg.Record) -> Event:
    data = r["data"]
    return Event(
        id=r["id"],
        client_id=r["client_id"],
        kind=EventKind(r["kind"]),
        occur_time=r["occur_time"],
        create_time=r["create_time"],
        data=json.loads(data) if isinstance(data, str) else dict(data),
        tracker_id=r["tracker_id"],
        outage_id=r["outage_id"],
    )


def _where(filter: EventFilter, args: list[Any]) -> list[str]:
    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    where: list[str] = []
    if filter.client_ids is not None:
        where.append(f"e.client_id = ANY({arg(list(filter.client_ids))}::uuid[])")
    if filter.client_id is not None:
        where.append(f"e.client_id = {arg(filter.client_id)}")
    if filter.kinds:
        where.append(f"e.kind = ANY({arg(sorted(k.value for k in filter.kinds))}::text[])")
    return where


class PostgresEventFeed:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def start(self) -> str:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                now: str = await conn.fetchval("SELECT pg_current_snapshot()::text")
        return encode_cursor(now)

    async def after(
        self, cursor: str, filter: EventFilter, limit: int
    ) -> tuple[list[tuple[Event, str]], str]:
        settled, upto, last_id = decode_cursor(cursor)
        args: list[Any] = [settled]
        where = [
            "e.xid >= pg_snapshot_xmin($1::text::pg_snapshot)",
            "NOT pg_visible_in_snapshot(e.xid, $1::text::pg_snapshot)",
        ]
        if upto:
            args += [upto, last_id]
            where += ["pg_visible_in_snapshot(e.xid, $2::text::pg_snapshot)", "e.id > $3"]
        where += _where(filter, args)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events e WHERE {' AND '.join(where)}"
            f" ORDER BY e.id LIMIT {int(limit) + 1}"
        )
        with unavailable_on_connection_error():
            async with (
                self._pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                now: str = await conn.fetchval("SELECT pg_current_snapshot()::text")
                expired = await (
                    conn.fetchval(_EXPIRED_WITHIN, settled, upto, last_id)
                    if upto
                    else conn.fetchval(_EXPIRED, settled)
                )
                if expired:
                    raise FailedPrecondition(
                        "the cursor is older than the events kept (retention_events_days): "
                        "events after it were deleted; start again without a cursor",
                        CURSOR_FIELD,
                        kind="CURSOR_EXPIRED",
                    )
                rows = await conn.fetch(sql, *args)
        bound = upto or now
        events = [_event(r) for r in rows[:limit]]
        out = [(e, encode_cursor(settled, bound, e.id)) for e in events]
        if len(rows) > limit:
            return out, out[-1][1]
        if upto and len(out) < limit:  # the rest of (S, N] is read: go on past N
            more, cursor = await self.after(encode_cursor(upto), filter, limit - len(out))
            return out + more, cursor
        return out, encode_cursor(bound)

    async def page(self, filter: EventFilter, page: PageRequest) -> Page[Event]:
        args: list[Any] = []
        where = _where(filter, args)
        if page.after is not None:
            (last,) = cursor_parts(page.after, 1)
            if not last.isdigit() or int(last) > _INT64_MAX:
                raise InvalidArgument("page_token", "page token cursor out of range (id)")
            args.append(int(last))
            where.append(f"e.id < ${len(args)}")
        args.append(page.size + 1)
        sql = (
            f"SELECT {_EVENT_COLUMNS} FROM events e"
            f" {'WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY e.id DESC LIMIT ${len(args)}"
        )
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(sql, *args)
        items = [_event(r) for r in rows[: page.size]]
        after = str(items[-1].id) if len(rows) > page.size else None
        return Page(items, after)


_WEBHOOK_COLUMNS = "w.id, w.client_id, w.display_name, w.url, w.kinds, w.create_time, w.update_time"


def _webhook(r: asyncpg.Record) -> Webhook:
    return Webhook(
        id=r["id"],
        client_id=r["client_id"],
        display_name=r["display_name"],
        url=r["url"],
        kinds=frozenset(EventKind(k) for k in r["kinds"]),
        create_time=r["create_time"],
        update_time=r["update_time"],
    )


def _delivery(r: asyncpg.Record) -> Delivery:
    return Delivery(
        webhook_id=r["webhook_id"],
        event=_event(r),
        state=DeliveryState(r["state"]),
        attempts=r["attempts"],
        next_attempt_time=r["next_attempt_time"],
        last_attempt_time=r["last_attempt_time"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        deliver_time=r["deliver_time"],
    )


class PostgresWebhookRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self, new: NewWebhook, id: uuid.UUID, kek_id: str, sealed: bytes, now: datetime
    ) -> Webhook:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    f"""INSERT INTO webhooks AS w (id, client_id, display_name, url, kinds,
                            secret_kek_id, secret_sealed, create_time, update_time)
                        SELECT $1, $2, $3, $4, $5, $6, $7, $8, $8
                        WHERE EXISTS (SELECT 1 FROM clients WHERE id = $2)
                        RETURNING {_WEBHOOK_COLUMNS}""",
                    id,
                    new.client_id,
                    new.display_name,
                    new.url,
                    sorted(k.value for k in new.kinds),
                    kek_id,
                    sealed,
                    now,
                )
        if row is None:
            raise NotFound("client", str(new.client_id))
        return _webhook(row)

    async def get(self, id: uuid.UUID) -> Webhook | None:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks w WHERE w.id = $1", id
                )
        return None if row is None else _webhook(row)

    async def list_webhooks(
        self,
        client_ids: frozenset[uuid.UUID] | None,
        client_id: uuid.UUID | None,
        page: PageRequest,
    ) -> Page[Webhook]:
        args: list[Any] = []
        where: list[str] = []
        if client_ids is not None:
            args.append(list(client_ids))
            where.append(f"w.client_id = ANY(${len(args)}::uuid[])")
        if client_id is not None:
            args.append(client_id)
            where.append(f"w.client_id = ${len(args)}")
        if page.after is not None:
            (last,) = cursor_parts(page.after, 1)
            try:
                args.append(uuid.UUID(last))
            except ValueError:
                raise InvalidArgument("page_token", "page token cursor out of range") from None
            where.append(f"w.id > ${len(args)}")
        args.append(page.size + 1)
        sql = (
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks w"
            f" {'WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY w.id LIMIT ${len(args)}"
        )
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(sql, *args)
        items = [_webhook(r) for r in rows[: page.size]]
        return Page(items, str(items[-1].id) if len(rows) > page.size else None)

    async def delete(self, id: uuid.UUID) -> bool:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                done: str = await conn.execute("DELETE FROM webhooks WHERE id = $1", id)
        return done.endswith(" 1")

    async def deliveries(self, filter: DeliveryFilter, page: PageRequest) -> Page[Delivery]:
        args: list[Any] = []
        where: list[str] = []
        if filter.client_ids is not None:
            args.append(list(filter.client_ids))
            where.append(f"w.client_id = ANY(${len(args)}::uuid[])")
        if filter.webhook_id is not None:
            args.append(filter.webhook_id)
            where.append(f"d.webhook_id = ${len(args)}")
        if filter.state is not None:
            args.append(filter.state.value)
            where.append(f"d.state = ${len(args)}")
        if page.after is not None:
            last, hook = cursor_parts(page.after, 2)
            if not last.isdigit() or int(last) > _INT64_MAX:
                raise InvalidArgument("page_token", "page token cursor out of range (id)")
            try:
                hook_id = uuid.UUID(hook)
            except ValueError:
                raise InvalidArgument("page_token", "page token cursor out of range") from None
            args += [int(last), hook_id]
            where.append(f"(d.event_id, d.webhook_id) < (${len(args) - 1}, ${len(args)})")
        args.append(page.size + 1)
        sql = (
            f"SELECT {_EVENT_COLUMNS}, d.webhook_id, d.state, d.attempts, d.next_attempt_time,"
            " d.last_attempt_time, d.last_status, d.last_error, d.deliver_time"
            " FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id"
            " JOIN events e ON e.id = d.event_id"
            f" {'WHERE ' + ' AND '.join(where) if where else ''}"
            f" ORDER BY d.event_id DESC, d.webhook_id DESC LIMIT ${len(args)}"
        )
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(sql, *args)
        items = [_delivery(r) for r in rows[: page.size]]
        after = None
        if len(rows) > page.size:
            after = f"{items[-1].event.id}|{items[-1].webhook_id}"
        return Page(items, after)

    async def redeliver(self, webhook_id: uuid.UUID, event_ids: Sequence[int]) -> int:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                done: str = await conn.execute(
                    """UPDATE webhook_deliveries SET state = 'PENDING', attempts = 0,
                           next_attempt_time = now()
                       WHERE webhook_id = $1 AND state = 'DEAD'
                         AND (cardinality($2::bigint[]) = 0 OR event_id = ANY($2::bigint[]))""",
                    webhook_id,
                    list(event_ids),
                )
        return int(done.split()[-1])

    async def claim(
        self, limit: int, lease: timedelta, now: datetime
    ) -> list[tuple[DueDelivery, str, bytes]]:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    f"""WITH due AS (
                            SELECT webhook_id, event_id FROM webhook_deliveries
                            WHERE state = 'PENDING' AND next_attempt_time <= $1
                            ORDER BY next_attempt_time, event_id LIMIT $2
                            FOR UPDATE SKIP LOCKED),
                        leased AS (
                            UPDATE webhook_deliveries d SET next_attempt_time = $1 + $3
                            FROM due WHERE d.webhook_id = due.webhook_id
                              AND d.event_id = due.event_id
                            RETURNING d.webhook_id, d.event_id, d.attempts)
                        SELECT {_EVENT_COLUMNS}, l.webhook_id, l.attempts, w.url,
                               w.secret_kek_id, w.secret_sealed
                        FROM leased l JOIN webhooks w ON w.id = l.webhook_id
                        JOIN events e ON e.id = l.event_id
                        ORDER BY e.id""",
                    now,
                    limit,
                    lease,
                )
        return [
            (
                DueDelivery(r["webhook_id"], r["url"], b"", _event(r), r["attempts"]),
                r["secret_kek_id"],
                bytes(r["secret_sealed"]),
            )
            for r in rows
        ]

    async def delivered(
        self, webhook_id: uuid.UUID, event_id: int, status: int, now: datetime
    ) -> None:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                await conn.execute(
                    """UPDATE webhook_deliveries SET state = 'DELIVERED',
                           attempts = attempts + 1, last_attempt_time = $3, last_status = $4,
                           last_error = NULL, deliver_time = $3
                       WHERE webhook_id = $1 AND event_id = $2 AND state = 'PENDING'""",
                    webhook_id,
                    event_id,
                    now,
                    status,
                )

    async def failed(
        self,
        webhook_id: uuid.UUID,
        event_id: int,
        status: int | None,
        error: str,
        next_attempt: datetime | None,
        now: datetime,
    ) -> None:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                await conn.execute(
                    """UPDATE webhook_deliveries SET attempts = attempts + 1,
                           state = CASE WHEN $5::timestamptz IS NULL THEN 'DEAD'
                                        ELSE 'PENDING' END,
                           next_attempt_time = coalesce($5, next_attempt_time),
                           last_attempt_time = $3, last_status = $4, last_error = $6
                       WHERE webhook_id = $1 AND event_id = $2 AND state = 'PENDING'""",
                    webhook_id,
                    event_id,
                    now,
                    status,
                    next_attempt,
                    error[:500],
                )
