"""Issue 15: the query server reads from a read replica when ``database_read_url`` is set,
and writes never go there.

A real streaming replica: a private primary (initdb), a standby made from it with
``pg_basebackup -R``, both on free loopback ports. Pausing the standby's WAL replay shows
both that the query server reads from it and what replica lag means to a caller: a write
acknowledged by the collector is not yet visible to the query server (no read-your-writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import pathlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from adapters.postgres.migrator import migrate
from adapters.postgres.pool import ReplicaRouting
from servers.config import Settings
from tests.integration.conftest import Stack, stack_settings
from tests.integration.test_detectors import detector
from tests.integration.test_detectors import stubs as detector_stubs
from tests.integration.test_fetcher_process import PrivatePostgres
from tests.integration.test_jobs import csv_of, job_stubs, run_of_new_client
from tests.integration.test_reports import tracker_in_new_run
from tracker.v1 import detector_query_service_pb2 as dq
from tracker.v1 import job_query_service_pb2 as jq
from tracker.v1 import job_service_pb2 as js
from tracker.v1 import jobs_pb2 as jpb
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as sq
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import status_query_service_pb2 as stq
from tracker.v1 import status_query_service_pb2_grpc as stq_grpc
from tracker.v1 import user_query_service_pb2 as uq

pytestmark = pytest.mark.integration


PrivatePostgresT = TypeVar("PrivatePostgresT", bound=PrivatePostgres)


class Standby(PrivatePostgres):
    """A streaming replica of ``primary``, made with ``pg_basebackup -R``."""

    def __init__(self, root: pathlib.Path, primary: PrivatePostgres) -> None:
        super().__init__(root)
        self.primary = primary

    def init(self) -> None:
        self.own_root()
        self._run(
            str(self.BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary.port),
            "-U",
            "postgres",
            "-D",
            str(self.data),
            "-R",  # standby.signal + primary_conninfo: a streaming standby
            "-X",
            "stream",
            "--checkpoint=fast",  # not waiting for the next scheduled checkpoint
            "--no-sync",
        )


@pytest.fixture(scope="module")
async def replication() -> AsyncIterator[tuple[PrivatePostgres, Standby]]:
    """One primary with a migrated template database and its standby, for the module: each
    test gets databases of its own on them (``replicated``)."""
    root = pathlib.Path(f"/tmp/tracker-repl-{uuid.uuid4().hex[:8]}")
    primary = PrivatePostgres(root / "primary")
    standby = Standby(root / "standby", primary)
    started: list[PrivatePostgres] = []
    try:
        await asyncio.to_thread(primary.init)
        await asyncio.to_thread(primary.start)
        started.append(primary)
        conn = await asyncpg.connect(primary.url)
        try:
            await conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
        finally:
            await conn.close()
        conn = await asyncpg.connect(on_database(primary, TEMPLATE).url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        await asyncio.to_thread(standby.init)
        await asyncio.to_thread(standby.start)
        started.append(standby)
        yield primary, standby
    finally:
        for pg in reversed(started):
            with contextlib.suppress(subprocess.CalledProcessError):
                await asyncio.to_thread(pg.stop)
        shutil.rmtree(root, ignore_errors=True)


TEMPLATE = "tracker_template"


def on_database(pg: PrivatePostgresT, database: str) -> PrivatePostgresT:
    """The same server, its ``url`` naming ``database``."""
    view = copy.copy(pg)
    view.url = pg.url.rsplit("/", 1)[0] + "/" + database
    return view


@pytest.fixture
async def replicated(
    replication: tuple[PrivatePostgres, Standby],
) -> AsyncIterator[tuple[PrivatePostgres, Standby]]:
    """A fresh migrated database on the primary, once the standby has it too; the standby
    (which a test may stop) is started again after the test."""
    primary, standby = replication
    database = f"tracker_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(primary.url)
    try:
        await conn.execute(f'CREATE DATABASE "{database}" TEMPLATE "{TEMPLATE}"')
    finally:
        await conn.close()
    on_standby = on_database(standby, database)
    async with asyncio.timeout(30):  # streaming replication brings it over
        while True:
            try:
                await (await asyncpg.connect(on_standby.url)).close()
                break
            except (asyncpg.InvalidCatalogNameError, asyncpg.CannotConnectNowError, OSError):
                await asyncio.sleep(0.05)
    yield on_database(primary, database), on_standby
    if not await asyncio.to_thread(standby.running):
        await asyncio.to_thread(standby.start)


async def replay(standby: Standby, on: bool) -> None:
    conn = await asyncpg.connect(standby.url)
    try:
        assert await conn.fetchval("SELECT pg_is_in_recovery()")
        await conn.execute(
            "SELECT pg_wal_replay_resume()" if on else "SELECT pg_wal_replay_pause()"
        )
    finally:
        await conn.close()


async def visible(stack: Stack, client_id: str) -> bool:
    try:
        await stack.query.GetClient(sq.GetClientRequest(id=client_id))
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_the_query_server_reads_from_the_replica_and_its_lag_shows(
    replicated: tuple[PrivatePostgres, Standby],
    stack_for: Callable[[Settings], Awaitable[Stack]],
) -> None:
    primary, standby = replicated
    stack = await stack_for(stack_settings(primary.url, database_read_url=standby.url))

    first = (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="A")))
    ).client
    async with asyncio.timeout(20):  # streaming replication catches up
        while not await visible(stack, first.id):
            await asyncio.sleep(0.05)

    await replay(standby, on=False)
    try:
        second = (
            await stack.setup.CreateClient(
                s.CreateClientRequest(client=pb.Client(display_name="B"))
            )
        ).client
        # acknowledged by the collector (primary), not yet on the replica the query reads
        await asyncio.sleep(0.5)
        assert not await visible(stack, second.id)
        listed = await stack.query.ListClients(sq.ListClientsRequest(page_size=100))
        assert [c.id for c in listed.clients] == [first.id]
        # the collector's own reads stay on the primary
        updated = await stack.setup.UpdateClient(
            s.UpdateClientRequest(client=pb.Client(id=second.id, display_name="B2"))
        )
        assert updated.client.display_name == "B2"
    finally:
        await replay(standby, on=True)
    async with asyncio.timeout(20):
        while not await visible(stack, second.id):
            await asyncio.sleep(0.05)


async def test_reads_of_every_query_service_work_through_a_read_only_pool(
    database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]
) -> None:
    """``database_read_url`` sessions are READ ONLY: a query-side use case that wrote would
    fail here (as it would on a replica)."""
    stack = await stack_for(stack_settings(database_url, database_read_url=database_url))
    tracker = await tracker_in_new_run(stack)
    assert stack.query_channel is not None
    got = await stack.query.GetTracker(sq.GetTrackerRequest(id=tracker.id))
    assert got.tracker.id == tracker.id
    trackers = await stack.query.ListTrackers(sq.ListTrackersRequest(page_size=10))
    assert [t.id for t in trackers.trackers] == [tracker.id]
    users = await stack.user_query.ListUsers(uq.ListUsersRequest(page_size=10))
    assert users.users
    status = stq_grpc.StatusQueryServiceStub(stack.query_channel)
    history = await status.ListLocationHistory(
        stq.ListLocationHistoryRequest(tracker_id=tracker.id)
    )
    assert list(history.points) == []

    # and the read pool really refuses writes
    assert stack.container is not None
    pool = await stack.container.read_pool.async_()
    assert pool is not await stack.container.db_pool.async_()
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await conn.execute("DELETE FROM clients")


async def test_without_a_read_url_reads_share_the_primary_pool(stack: Stack) -> None:
    assert stack.container is not None
    assert await stack.container.read_pool.async_() is await stack.container.db_pool.async_()


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health(stack: Stack, service: str = "") -> int:
    reply = await stack.health.Check(health_pb2.HealthCheckRequest(service=service))
    return int(reply.status)


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    """Wait for ``condition`` (a bound for a loaded machine, not a speed)."""
    async with asyncio.timeout(timeout_s):
        while not await condition():
            await asyncio.sleep(0.05)


def replica_up() -> float | None:
    return REGISTRY.get_sample_value("tracker_dependency_up", {"dependency": "postgres_replica"})


async def test_detector_and_job_reads_come_from_the_replica(
    replicated: tuple[PrivatePostgres, Standby],
    stack_for: Callable[[Settings], Awaitable[Stack]],
) -> None:
    primary, standby = replicated
    stack = await stack_for(stack_settings(primary.url, database_read_url=standby.url))
    writes, reads = detector_stubs(stack)
    jobs, job_reads = job_stubs(stack)
    client, run = await run_of_new_client(stack, "replicated")
    first = await detector(writes, client.id, "first", 52.5)
    await until(lambda: found(reads.GetDetector(dq.GetDetectorRequest(id=first.id))))

    await replay(standby, on=False)
    try:
        second = await detector(writes, client.id, "second", 52.6)
        job = (
            await jobs.StartJob(
                js.StartJobRequest(
                    kind=jpb.JOB_KIND_IMPORT_TRACKERS,
                    production_run_id=run.id,
                    file=csv_of(["02:00:00:00:00:01", "not-a-mac"]),
                    items_per_second=1e6,
                )
            )
        ).job
        await asyncio.sleep(0.5)
        # acknowledged by the collector, not yet on the replica the query server reads
        assert not await found(reads.GetDetector(dq.GetDetectorRequest(id=second.id)))
        listed = await reads.ListDetectors(dq.ListDetectorsRequest(client_id=client.id))
        assert [x.id for x in listed.detectors] == [first.id]
        assert not await found(job_reads.GetJob(jq.GetJobRequest(job_id=job.id)))
        assert list((await job_reads.ListJobs(jq.ListJobsRequest())).jobs) == []
    finally:
        await replay(standby, on=True)
    await until(lambda: found(reads.GetDetector(dq.GetDetectorRequest(id=second.id))))
    await until(lambda: found(job_reads.GetJob(jq.GetJobRequest(job_id=job.id))))


async def found(call: Awaitable[object]) -> bool:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        if err.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_reads_move_to_the_primary_while_the_replica_lags_or_is_down(
    replicated: tuple[PrivatePostgres, Standby],
    stack_for: Callable[[Settings], Awaitable[Stack]],
) -> None:
    """``database_read_fallback=primary`` (the default): the replica's probe fails once it
    is ``database_read_max_lag_s`` behind or unreachable, reads go to the primary meanwhile,
    readiness stays SERVING; once it has caught up, reads go back to it."""
    primary, standby = replicated
    stack = await stack_for(
        stack_settings(primary.url, database_read_url=standby.url, database_read_max_lag_s=1)
    )
    assert stack.container is not None
    routing = await stack.container.read_pool.async_()
    assert isinstance(routing, ReplicaRouting)
    assert routing.on_replica
    assert replica_up() == 1

    await replay(standby, on=False)
    try:
        client = (
            await stack.setup.CreateClient(
                s.CreateClientRequest(client=pb.Client(display_name="lagged"))
            )
        ).client
        # more than a second behind: the probe fails and reads come from the primary
        await until(lambda: visible(stack, client.id))
        assert not routing.on_replica
        assert replica_up() == 0
        assert await health(stack) == SERVING
        assert await health(stack, "tracker.v1.SetupQueryService") == SERVING
    finally:
        await replay(standby, on=True)

    async def back() -> bool:
        return routing.on_replica

    await until(back)
    assert replica_up() == 1
    assert await visible(stack, client.id)  # from the replica again, which has caught up

    await asyncio.to_thread(standby.stop)

    async def moved() -> bool:
        return not routing.on_replica

    await until(moved)
    assert await visible(stack, client.id)
    assert await health(stack) == SERVING


async def test_with_fallback_not_serving_a_lagging_replica_fails_readiness(
    replicated: tuple[PrivatePostgres, Standby],
    stack_for: Callable[[Settings], Awaitable[Stack]],
) -> None:
    """``database_read_fallback=not_serving``: reads stay on the replica, and ``""`` and the
    query services go NOT_SERVING while it lags (the collector's services do not read it)."""
    primary, standby = replicated
    stack = await stack_for(
        stack_settings(
            primary.url,
            database_read_url=standby.url,
            database_read_max_lag_s=1,
            database_read_fallback="not_serving",
        )
    )
    assert await health(stack) == SERVING
    await replay(standby, on=False)
    try:
        client = (
            await stack.setup.CreateClient(
                s.CreateClientRequest(client=pb.Client(display_name="held back"))
            )
        ).client

        async def out() -> bool:
            return await health(stack) == NOT_SERVING

        await until(out)
        assert await health(stack, "tracker.v1.SetupQueryService") == NOT_SERVING
        assert await health(stack, "tracker.v1.SetupService") == SERVING
        assert not await visible(stack, client.id)  # still read from the replica
    finally:
        await replay(standby, on=True)

    async def serving() -> bool:
        return await health(stack) == SERVING

    await until(serving)
    assert await visible(stack, client.id)
