"""Report ingestion over a real client stream into the partitioned reports table: COPY,
idempotency, per-report rejection, tenant isolation."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import timestamp_pb2

from tests.integration.conftest import Stack
from tracker.v1 import report_service_pb2 as r
from tracker.v1 import report_service_pb2_grpc as r_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_service_pb2 as s

pytestmark = pytest.mark.integration


def ts(t: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(t)
    return out


async def tracker_in_new_run(stack: Stack) -> pb.Tracker:
    client = (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="R")))
    ).client
    brand = (
        await stack.setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name="R"))
        )
    ).brand
    run = pb.ProductionRun(brand_id=brand.id, display_name="R")
    run.start_time.FromJsonString("2026-01-01T00:00:00Z")
    run.end_time.FromJsonString("2027-12-01T00:00:00Z")
    run = (
        await stack.setup.CreateProductionRun(s.CreateProductionRunRequest(production_run=run))
    ).production_run
    key = hashlib.sha256(client.id.encode()).digest()[:28]
    return (
        await stack.setup.CreateTracker(
            s.CreateTrackerRequest(
                tracker=pb.Tracker(production_run_id=run.id, advertisement_key=key)
            )
        )
    ).tracker


def report(t: pb.Tracker, when: datetime, n: int, **kw: object) -> r.ReportInput:
    fields: dict[str, object] = dict(
        hashed_advertisement_key=t.hashed_advertisement_key,
        report_time=ts(when),
        latitude=52.5 + n * 1e-4,
        longitude=13.4,
        confidence=2,
        horizontal_accuracy_m=25,
    )
    fields.update(kw)
    return r.ReportInput(**fields)  # type: ignore[arg-type]


async def ingest(stack: Stack, batches: list[list[r.ReportInput]]) -> r.IngestReportsResponse:
    assert stack.collector_channel is not None
    stub = r_grpc.ReportServiceStub(stack.collector_channel)
    return await stub.IngestReports(iter([r.IngestReportsRequest(reports=b) for b in batches]))


async def stored(stack: Stack, tracker_id: str) -> int:
    assert stack.container is not None
    uow_factory = await stack.container.uow_factory.async_()
    async with uow_factory() as uow:
        return await uow.reports.count(uuid.UUID(tracker_id))


async def test_reports_are_stored_once_across_months_and_repeats(stack: Stack) -> None:
    t = await tracker_in_new_run(stack)
    now = datetime.now(UTC).replace(microsecond=0)
    # Late and out of order, spanning two months (two partitions), each report sent twice.
    times = [now - timedelta(days=d, hours=h) for d in (0, 3, 6, 35) for h in (0, 5)]
    batch = [report(t, when, n) for n, when in enumerate(times)]
    first = await ingest(stack, [batch[:4], batch[4:], batch[:2]])
    assert (
        first.received_count,
        first.stored_count,
        first.duplicate_count,
        first.rejected_count,
    ) == (10, 8, 2, 0)
    again = await ingest(stack, [list(reversed(batch))])
    assert (again.stored_count, again.duplicate_count) == (0, 8)
    assert await stored(stack, t.id) == 8
    by_id = await ingest(
        stack,
        [[report(t, now - timedelta(hours=1), 99, tracker_id=t.id, hashed_advertisement_key=b"")]],
    )
    assert by_id.stored_count == 1


async def test_invalid_reports_are_rejected_one_by_one_and_named(stack: Stack) -> None:
    t = await tracker_in_new_run(stack)
    now = datetime.now(UTC)
    good = report(t, now - timedelta(hours=2), 1)
    bad = [
        report(t, now - timedelta(hours=2), 2, confidence=0),
        report(t, now - timedelta(hours=2), 3, latitude=91.0),
        report(t, now + timedelta(days=1), 4),
        report(t, now, 5, horizontal_accuracy_m=-1, status=300),
        report(t, now, 6, hashed_advertisement_key=b"\x00" * 32),
    ]
    out = await ingest(stack, [[good, *bad]])
    assert (out.stored_count, out.rejected_count) == (1, 5)
    fields = {e.field for e in out.errors}
    assert {
        "reports[1].confidence",
        "reports[2].latitude",
        "reports[3].report_time",
        "reports[4].horizontal_accuracy_m",
        "reports[4].status",
        "reports[5]",
    } <= fields


async def test_another_clients_tracker_is_an_unknown_tracker(stack: Stack) -> None:
    from domain.access import Principal, Role
    from usecases.access import NewUser

    mine, theirs = await tracker_in_new_run(stack), await tracker_in_new_run(stack)
    await stack.access.create_user(
        Principal.system(),
        NewUser(
            email="feeder@example.com",
            password="feeder-password-1",
            memberships={uuid.UUID(mine.client_id): Role.CLIENT_ADMIN},
        ),
    )
    feeder = stack.as_token(await stack.token_for("feeder@example.com"))
    when = datetime.now(UTC) - timedelta(hours=1)
    out = await ingest(
        feeder,
        [
            [
                report(mine, when, 1),
                report(theirs, when, 2),
                report(mine, when, 3, hashed_advertisement_key=b"x" * 32),
            ]
        ],
    )
    assert (out.stored_count, out.rejected_count) == (1, 2)
    assert [e.description for e in out.errors] == ["unknown tracker", "unknown tracker"]
    assert await stored(stack, theirs.id) == 0


async def test_deleting_a_tracker_keeps_its_history_unless_forced(stack: Stack) -> None:
    t = await tracker_in_new_run(stack)
    other = await tracker_in_new_run(stack)
    when = datetime.now(UTC) - timedelta(hours=1)
    await ingest(stack, [[report(t, when, 1), report(other, when, 2)]])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.setup.DeleteTracker(s.DeleteTrackerRequest(id=t.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await stored(stack, t.id) == 1
    await stack.setup.DeleteTracker(s.DeleteTrackerRequest(id=t.id, force=True))
    assert await stored(stack, t.id) == 0
    # Deleting a whole client with force takes its trackers' reports along, and only those.
    await stack.setup.DeleteClient(s.DeleteClientRequest(id=t.client_id, force=True))
    assert await stored(stack, other.id) == 1
    await stack.setup.DeleteClient(s.DeleteClientRequest(id=other.client_id, force=True))
    assert await stored(stack, other.id) == 0
