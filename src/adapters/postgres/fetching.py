"""What the fetcher reads from and writes to PostgreSQL: the active fleet with its saved
fetch state (to rebuild the queue), the keys and latest report time of claimed trackers, and
the state after each turn."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from domain.fetching import FetchTarget, TrackerKey
from domain.model import AdvertisementKey, SealedSecret
from domain.reports import Report, e7
from domain.scheduling import FetchResult, FetchState

_ACTIVE = """
    t.private_key_ciphertext IS NOT NULL
    AND p.start_time <= $1 AND $1 < p.end_time + $GRACE::interval
"""


def _active(grace_param: int) -> str:
    """Active at $1: started, and ended less than the grace period (parameter
    ``grace_param``) ago; the rule is ``FetchPolicy.active``."""
    return _ACTIVE.replace("$GRACE", f"${grace_param}")


def _state(r: asyncpg.Record) -> FetchState | None:
    if r["factor"] is None:
        return None
    try:
        result = FetchResult(r["last_result"]) if r["last_result"] else None
    except ValueError:
        result = None
    return FetchState(
        factor=r["factor"],
        successes=r["successes"],
        failures=r["failures"],
        consecutive_failures=r["consecutive_failures"],
        last_success=r["last_success_time"],
        last_attempt=r["last_attempt_time"],
        last_result=result,
        next_due=r["next_due_time"],
    )


class PostgresFetchStateRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def active_targets(
        self, now: datetime, end_grace: timedelta = timedelta(0)
    ) -> list[tuple[uuid.UUID, datetime | None]]:
        """Every tracker that should be in the queue now (its run is active, or ended less
        than ``end_grace`` ago, and it has a private key), with the due time saved after its
        last turn, if any."""
        rows = await self._conn.fetch(
            f"""
            SELECT t.id, s.next_due_time
            FROM production_runs p
            JOIN trackers t ON t.production_run_id = p.id
            LEFT JOIN fetch_state s ON s.tracker_id = t.id
            WHERE {_active(2)}
            """,
            now,
            end_grace,
        )
        return [(r["id"], r["next_due_time"]) for r in rows]

    async def keys_for(
        self,
        ids: Sequence[uuid.UUID],
        now: datetime,
        floor: datetime,
        end_grace: timedelta = timedelta(0),
        overlap: timedelta = timedelta(0),
    ) -> list[FetchTarget]:
        """Keys of those of ``ids`` still active now, with the time of the latest report we
        hold for each (looked at back to ``floor`` only) and of those held from it minus
        ``overlap`` on, the state saved after its last turn and its run's window."""
        rows = await self._conn.fetch(
            f"""
            SELECT t.id, t.advertisement_key, t.private_key_ciphertext, t.private_key_kek_id,
                   m.last_report, h.held,
                   p.start_time AS run_start, p.end_time AS run_end,
                   s.factor, s.successes, s.failures, s.consecutive_failures,
                   s.last_success_time, s.last_attempt_time, s.last_result, s.next_due_time
            FROM trackers t JOIN production_runs p ON p.id = t.production_run_id
            LEFT JOIN fetch_state s ON s.tracker_id = t.id
            LEFT JOIN LATERAL (
                SELECT max(r.report_time) AS last_report FROM reports r
                WHERE r.tracker_id = t.id AND r.report_time >= $3) m ON true
            LEFT JOIN LATERAL (
                SELECT array_agg(r.report_time) AS held FROM reports r
                WHERE r.tracker_id = t.id AND r.report_time >= m.last_report - $5::interval
                  AND r.report_time >= $3) h ON true
            WHERE t.id = ANY($2::uuid[]) AND {_active(4)}
            """,
            now,
            list(ids),
            floor,
            end_grace,
            overlap,
        )
        return [
            FetchTarget(
                key=TrackerKey(
                    r["id"],
                    AdvertisementKey(bytes(r["advertisement_key"])),
                    SealedSecret(r["private_key_kek_id"], bytes(r["private_key_ciphertext"])),
                    held=tuple(r["held"] or ()),
                ),
                last_report=r["last_report"],
                state=_state(r),
                run_start=r["run_start"],
                run_end=r["run_end"],
            )
            for r in rows
        ]

    async def with_new_reports(self, reports: Sequence[Report]) -> set[uuid.UUID]:
        """Trackers with at least one of ``reports`` not stored yet, by the reports'
        identity (the primary key ``add_many`` conflicts on)."""
        if not reports:
            return set()
        rows = await self._conn.fetch(
            """
            SELECT DISTINCT u.tracker_id
            FROM unnest($1::uuid[], $2::timestamptz[], $3::integer[], $4::integer[])
                 AS u(tracker_id, report_time, latitude_e7, longitude_e7)
            WHERE NOT EXISTS (
                SELECT 1 FROM reports r
                WHERE r.tracker_id = u.tracker_id AND r.report_time = u.report_time
                  AND r.latitude_e7 = u.latitude_e7 AND r.longitude_e7 = u.longitude_e7)
            """,
            [r.tracker_id for r in reports],
            [r.report_time for r in reports],
            [e7(r.position.latitude) for r in reports],
            [e7(r.position.longitude) for r in reports],
        )
        return {r["tracker_id"] for r in rows}

    async def save_many(
        self, states: Sequence[tuple[uuid.UUID, FetchState]], account: str | None = None
    ) -> None:
        """Upsert the states; trackers deleted meanwhile are skipped. ``account`` (the source
        account that fetched them) is kept per tracker; None leaves it as it was."""
        if not states:
            return
        rows = [
            (
                tracker_id,
                s.factor,
                s.successes,
                s.failures,
                s.consecutive_failures,
                s.last_success,
                s.last_attempt,
                s.last_result.value if s.last_result else None,
                s.next_due,
            )
            for tracker_id, s in states
        ]
        cols = [list(col) for col in zip(*rows, strict=True)]
        await self._conn.execute(
            """
            INSERT INTO fetch_state AS f (tracker_id, factor, successes, failures,
                consecutive_failures, last_success_time, last_attempt_time, last_result,
                next_due_time, last_account)
            SELECT u.*, $10::text FROM unnest($1::uuid[], $2::smallint[], $3::bigint[],
                $4::bigint[], $5::integer[], $6::timestamptz[], $7::timestamptz[],
                $8::text[], $9::timestamptz[]) AS u(tracker_id, factor, successes, failures,
                consecutive_failures, last_success_time, last_attempt_time, last_result,
                next_due_time)
            JOIN trackers t ON t.id = u.tracker_id
            ON CONFLICT (tracker_id) DO UPDATE SET factor = excluded.factor,
                successes = excluded.successes, failures = excluded.failures,
                consecutive_failures = excluded.consecutive_failures,
                last_success_time = excluded.last_success_time,
                last_attempt_time = excluded.last_attempt_time,
                last_result = excluded.last_result, next_due_time = excluded.next_due_time,
                last_account = coalesce(excluded.last_account, f.last_account),
                update_time = now()
            """,
            *cols,
            account,
        )

    async def get(self, tracker_id: uuid.UUID) -> FetchState | None:
        row = await self._conn.fetchrow(
            "SELECT factor, successes, failures, consecutive_failures, last_success_time, "
            "last_attempt_time, last_result, next_due_time FROM fetch_state "
            "WHERE tracker_id = $1",
            tracker_id,
        )
        return None if row is None else _state(row)
