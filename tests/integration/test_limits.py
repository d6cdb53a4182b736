"""Every batch RPC refuses more than its documented limit with INVALID_ARGUMENT naming the
field and the limit, and a server refuses a message larger than max_message_bytes with
RESOURCE_EXHAUSTED before decoding it (issue 10)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from domain.limits import MAX_BATCH_KEYS, MAX_BATCH_STATUSES, MAX_BATCH_TRACKERS, MAX_IMPORT
from servers.config import Settings
from tests.integration.conftest import Stack, stack_settings
from tests.integration.test_reports import ingest, report, tracker_in_new_run
from tracker.v1 import key_service_pb2 as k
from tracker.v1 import key_service_pb2_grpc as k_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import status_query_service_pb2 as sq
from tracker.v1 import status_query_service_pb2_grpc as sq_grpc

pytestmark = pytest.mark.integration


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def test_every_batch_rpc_names_its_limit(stack: Stack) -> None:
    assert stack.collector_channel is not None
    assert stack.query_channel is not None
    keys = k_grpc.KeyServiceStub(stack.collector_channel)
    statuses = sq_grpc.StatusQueryServiceStub(stack.query_channel)
    run = str(uuid.uuid4())
    cases: list[tuple[str, int, Awaitable[Any]]] = [
        (
            "trackers",
            MAX_BATCH_TRACKERS,
            stack.setup.BatchCreateTrackers(
                s.BatchCreateTrackersRequest(
                    production_run_id=run,
                    trackers=[pb.Tracker(advertisement_key=bytes(28))] * (MAX_BATCH_TRACKERS + 1),
                )
            ),
        ),
        (
            "tracker_ids",
            MAX_BATCH_STATUSES,
            statuses.BatchGetTrackerStatuses(
                sq.BatchGetTrackerStatusesRequest(tracker_ids=[run] * (MAX_BATCH_STATUSES + 1))
            ),
        ),
        (
            "mac_addresses",
            MAX_IMPORT,
            keys.AllocateTags(
                k.AllocateTagsRequest(
                    client_id=run, mac_addresses=["C0:00:00:00:00:00"] * (MAX_IMPORT + 1)
                )
            ),
        ),
        (
            "mac_addresses",
            MAX_IMPORT,
            keys.ImportTrackers(
                k.ImportTrackersRequest(
                    production_run_id=run, mac_addresses=["C0:00:00:00:00:00"] * (MAX_IMPORT + 1)
                )
            ),
        ),
        (
            "private_keys",
            MAX_IMPORT,
            keys.ImportExternalTrackers(
                k.ImportExternalTrackersRequest(
                    production_run_id=run, private_keys=[bytes(28)] * (MAX_IMPORT + 1)
                )
            ),
        ),
        (
            "count",
            MAX_BATCH_KEYS,
            keys.CreateKeyBatch(k.CreateKeyBatchRequest(count=MAX_BATCH_KEYS + 1)),
        ),
    ]
    for field, limit, call in cases:
        err = await refused(call)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, err)
        assert f"{field}:" in (err.details() or ""), (field, err.details())
        assert str(limit) in (err.details() or ""), (field, err.details())


async def test_a_message_over_max_message_bytes_is_resource_exhausted(
    database_url: str, stack_for: Callable[[Settings], Awaitable[Stack]]
) -> None:
    stack = await stack_for(stack_settings(database_url, max_message_bytes=64 * 1024))
    t = await tracker_in_new_run(stack)
    err = await refused(
        stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="x" * 70_000)))
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    now = datetime.now(UTC)
    many = [report(t, now - timedelta(seconds=n), n, source="s" * 60) for n in range(1000)]
    err = await refused(ingest(stack, [many]))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Under the limit, the same stream in smaller messages goes through.
    done = await ingest(stack, [many[i : i + 200] for i in range(0, 1000, 200)])
    assert done.stored_count == 1000
