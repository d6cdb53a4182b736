"""Monthly partitions of ``reports`` are made ahead by maintenance, never by a request:
a month without one goes to the default partition until maintenance makes it (moving the
rows), and a message spread over many months is refused before any work (issue 10)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from adapters.postgres.partitions import PostgresReportPartitions
from adapters.postgres.uow import PostgresUnitOfWorkFactory
from domain.instants import add_months
from domain.limits import MAX_REPORT_MONTHS_PER_MESSAGE
from domain.model import GeoPoint
from domain.reports import Report
from tests.integration.conftest import Stack
from tests.integration.test_reports import ingest, report, tracker_in_new_run
from usecases.maintenance import MaintainReportPartitions

pytestmark = pytest.mark.integration


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


async def partitions(conn: asyncpg.Pool | asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'reports'::regclass"
    )
    return {r["relname"] for r in rows}


def a_report(when: datetime, tracker: uuid.UUID | None = None) -> Report:
    return Report(
        tracker_id=tracker or uuid.uuid4(),
        report_time=when,
        position=GeoPoint(52.5, 13.4),
        confidence=2,
        horizontal_accuracy_m=10,
    )


async def test_writers_into_a_month_without_partition_use_the_default_and_make_none(
    pool: asyncpg.Pool,
) -> None:
    """Several connections storing the first reports of a month at once (two fetchers did):
    nothing waits on DDL, nothing is lost, and maintenance later moves the rows into the
    month's own partition without queueing them for processing again."""
    uow = PostgresUnitOfWorkFactory(pool)
    month = datetime(2031, 7, 1, tzinfo=UTC)
    before = await partitions(pool)

    async def store(i: int) -> int:
        async with uow() as u:
            n = await u.reports.add_many([a_report(month + timedelta(hours=i))])
            await u.commit()
            return n

    assert await asyncio.gather(*(store(i) for i in range(4))) == [1, 1, 1, 1]
    assert await partitions(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM reports_default") == 4
    queued = await pool.fetch("SELECT tracker_id, version FROM processing_queue ORDER BY 1")

    repo = PostgresReportPartitions(pool)
    made = await asyncio.gather(*(repo.ensure([month]) for _ in range(3)))
    assert sorted(n for names in made for n in names) == ["reports_2031_07"]  # made once
    assert await pool.fetchval("SELECT count(*) FROM reports_2031_07") == 4
    assert await pool.fetchval("SELECT count(*) FROM reports_default") == 0
    assert await pool.fetchval("SELECT count(*) FROM reports") == 4
    assert await pool.fetch("SELECT tracker_id, version FROM processing_queue ORDER BY 1") == queued
    # The next report of that month goes straight to its partition.
    await store(10)
    assert await pool.fetchval("SELECT count(*) FROM reports_2031_07") == 5


async def test_maintenance_makes_the_months_around_now_and_drops_empty_hostile_ones(
    pool: asyncpg.Pool,
) -> None:
    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    repo = PostgresReportPartitions(pool)
    # Leftovers of on-demand creation before the time rule: one month far outside the
    # acceptable range (empty), one inside but old (kept), one outside holding a row (kept:
    # maintenance never drops data).
    for name, start, end in [
        ("reports_1950_03", "1950-03-01", "1950-04-01"),
        ("reports_2020_05", "2020-05-01", "2020-06-01"),
        ("reports_2150_01", "2150-01-01", "2150-02-01"),
    ]:
        await pool.execute(
            f"CREATE TABLE {name} PARTITION OF reports FOR VALUES FROM ('{start}') TO ('{end}')"
        )
    await pool.execute(
        "INSERT INTO reports_2150_01 (tracker_id, report_time, latitude_e7, longitude_e7, "
        "confidence, horizontal_accuracy_m, source) "
        "VALUES (gen_random_uuid(), '2150-01-02', 0, 0, 2, 1, 'test')"
    )
    turn = MaintainReportPartitions(repo, FixedClock(now), back_months=1, ahead_months=3)
    made = await turn()
    assert made == [
        "reports_2026_11",
        "reports_2026_12",
        "reports_2027_01",
        "reports_2027_02",
        "reports_2027_03",
    ]
    have = await partitions(pool)
    assert set(made) <= have
    assert "reports_1950_03" not in have
    assert {"reports_2020_05", "reports_2150_01", "reports_default"} <= have
    assert await turn() == []  # idempotent
    # A month later, one more month ahead.
    later = MaintainReportPartitions(
        repo, FixedClock(add_months(now, 1)), back_months=1, ahead_months=3
    )
    assert await later() == ["reports_2027_04"]


async def test_issue_10_repro_one_message_in_1000_months_is_refused_cheaply(
    stack: Stack, pool: asyncpg.Pool
) -> None:
    """1,000 reports in 1,000 different months: INVALID_ARGUMENT naming the limit, no
    partition made, nothing stored (before: 999 partitions in 16 s)."""
    t = await tracker_in_new_run(stack)
    before = await partitions(pool)
    start = datetime(1940, 1, 1, tzinfo=UTC)
    batch = [report(t, add_months(start, n), n) for n in range(1000)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await ingest(stack, [batch])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1000 months" in (err.value.details() or "")
    assert f"at most {MAX_REPORT_MONTHS_PER_MESSAGE}" in (err.value.details() or "")
    assert await partitions(pool) == before
    assert await pool.fetchval("SELECT count(*) FROM reports") == 0
    # The same 1,000 reports within the acceptable range and a dozen months are fine.
    now = datetime.now(UTC)
    ok = [report(t, now - timedelta(days=n % 300, minutes=n), n) for n in range(1000)]
    done = await ingest(stack, [ok])
    assert (done.stored_count, done.rejected_count) == (1000, 0)
    assert await partitions(pool) == before
