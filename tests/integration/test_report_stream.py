"""The IngestReports retry contract: a stream that fails tells the client how many of its
messages are stored (``committed_messages``, always a prefix), so resending the rest ends
with exactly the reports sent: none lost, none twice. PostgreSQL is cut mid-stream by a TCP
proxy between the server and the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from servers.config import Settings
from tests.integration.conftest import Stack, stack_settings
from tests.integration.proxy import TcpProxy
from tests.integration.test_health import via
from tests.integration.test_reports import report, tracker_in_new_run
from tracker.v1 import report_service_pb2 as r
from tracker.v1 import report_service_pb2_grpc as r_grpc
from tracker.v1 import resources_pb2 as pb

pytestmark = pytest.mark.integration

Identity = tuple[str, datetime, int, int]


@pytest.fixture
async def proxied(
    database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]
) -> AsyncIterator[tuple[Stack, TcpProxy]]:
    target = urlsplit(database_url)
    pg = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await pg.open()
    # No tracker cache: every message asks PostgreSQL, as a cold process would.
    yield (
        await stack_for(stack_settings(via(database_url, pg.port), ingest_tracker_cache_ttl_s=0.0)),
        pg,
    )
    if pg._server is not None:
        await pg.cut()


def messages(trackers: list[pb.Tracker], count: int, size: int) -> list[r.IngestReportsRequest]:
    """``count`` messages of ``size`` distinct reports, by hashed key and by tracker id."""
    now = datetime.now(UTC).replace(microsecond=0)
    out = []
    for k in range(count):
        batch = []
        for i in range(size):
            n = k * size + i
            t = trackers[n % len(trackers)]
            item = report(t, now - timedelta(seconds=n), n % 50)
            if n % 2:
                item.hashed_advertisement_key = b""
                item.tracker_id = t.id
            batch.append(item)
        out.append(r.IngestReportsRequest(reports=batch))
    return out


def identities(msgs: list[r.IngestReportsRequest], keys: dict[bytes, str]) -> set[Identity]:
    out = set()
    for m in msgs:
        for x in m.reports:
            tid = x.tracker_id or keys[x.hashed_advertisement_key]
            out.add(
                (
                    tid,
                    x.report_time.ToDatetime(tzinfo=UTC),
                    round(x.latitude * 1e7),
                    round(x.longitude * 1e7),
                )
            )
    return out


async def table(url: str) -> list[Identity]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT tracker_id, report_time, latitude_e7, longitude_e7 FROM reports"
        )
    finally:
        await conn.close()
    return [(str(a), b, c, d) for a, b, c, d in rows]


def progress(err: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(err)
    assert status is not None
    for d in status.details:
        if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            return dict(info.metadata)
    raise AssertionError("no ErrorInfo")


async def test_a_stream_cut_from_postgres_says_how_far_it_got_and_a_resend_completes_it(
    proxied: tuple[Stack, TcpProxy], database_url: str
) -> None:
    stack, pg = proxied
    trackers = [await tracker_in_new_run(stack) for _ in range(3)]
    keys = {t.hashed_advertisement_key: t.id for t in trackers}
    msgs = messages(trackers, count=20, size=50)
    before_cut = 8
    assert stack.collector_channel is not None
    stub = r_grpc.ReportServiceStub(stack.collector_channel)

    async def stream() -> AsyncIterator[r.IngestReportsRequest]:
        for k, m in enumerate(msgs):
            if k == before_cut:
                # Everything so far is stored (nothing in flight), then PostgreSQL goes away.
                async with asyncio.timeout(20):
                    while len(await table(database_url)) < before_cut * 50:
                        await asyncio.sleep(0.05)
                await pg.cut()
            yield m

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.IngestReports(stream())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    got = progress(err.value)
    assert got["committed_messages"] == str(before_cut)
    assert got["committed_reports"] == str(before_cut * 50)
    assert ("tracker-committed-messages", str(before_cut)) in tuple(
        err.value.trailing_metadata() or ()
    )
    status = rpc_status.from_call(err.value)
    assert status is not None
    assert any(d.Is(error_details_pb2.RetryInfo.DESCRIPTOR) for d in status.details)
    # Exactly the committed prefix is stored.
    stored = await table(database_url)
    assert set(stored) == identities(msgs[:before_cut], keys)

    # The client's retry: PostgreSQL is back, resend from the first message not committed.
    await pg.open()
    done = int(got["committed_messages"])
    async with asyncio.timeout(20):
        while True:
            try:
                out = await stub.IngestReports(iter(msgs[done:]))
                break
            except grpc.aio.AioRpcError as again:
                if again.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                done += int(progress(again)["committed_messages"])
                await asyncio.sleep(0.1)
    assert out.rejected_count == 0
    final = await table(database_url)
    assert len(final) == len(set(final)) == 20 * 50
    assert set(final) == identities(msgs, keys)


async def test_a_message_over_the_limit_ends_the_stream_after_the_stored_ones(
    stack: Stack, database_url: str
) -> None:
    t = await tracker_in_new_run(stack)
    now = datetime.now(UTC).replace(microsecond=0)
    good = [
        r.IngestReportsRequest(
            reports=[report(t, now - timedelta(seconds=k * 10 + i), i) for i in range(10)]
        )
        for k in range(3)
    ]
    too_big = r.IngestReportsRequest(
        reports=[report(t, now - timedelta(minutes=90), i) for i in range(10_001)]
    )
    assert stack.collector_channel is not None
    stub = r_grpc.ReportServiceStub(stack.collector_channel)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.IngestReports(iter([*good, too_big, good[0]]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert progress(err.value)["committed_messages"] == "3"
    assert len(await table(database_url)) == 30
