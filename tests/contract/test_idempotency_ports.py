"""The idempotency store's contract, on the fake and PostgreSQL alike."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adapters.postgres.idempotency import PostgresIdempotencyStore
from domain.errors import InvalidArgument
from domain.idempotency import IdempotencyKey, Mismatch, Replay, Running, Started
from tests.conftest import throwaway_pool
from tests.unit.fakes.idempotency import FakeIdempotencyStore

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
TTL = timedelta(hours=24)
KEY = IdempotencyKey("user:1|/tracker.v1.SetupService/CreateClient", "r-1")


@pytest.fixture(params=["fake", "postgres"])
async def store(request: pytest.FixtureRequest, template_database: str) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield FakeIdempotencyStore()
        return
    async with throwaway_pool(template_database) as pool:
        yield PostgresIdempotencyStore(pool)


async def claim(store: Any, key: IdempotencyKey, fp: bytes, now: datetime) -> Any:
    return await store.claim(key, fp, now, now + LEASE, now + TTL)


async def test_first_claim_starts_then_retries_wait_and_then_replay(store: Any) -> None:
    assert await claim(store, KEY, b"a", T0) == Started()
    assert await claim(store, KEY, b"a", T0 + timedelta(seconds=1)) == Running()
    await store.finish(KEY, b"response")
    assert await claim(store, KEY, b"a", T0 + timedelta(hours=23)) == Replay(b"response")


async def test_another_request_with_the_key_is_a_mismatch_running_or_finished(store: Any) -> None:
    assert await claim(store, KEY, b"a", T0) == Started()
    assert await claim(store, KEY, b"b", T0) == Mismatch()
    await store.finish(KEY, b"response")
    assert await claim(store, KEY, b"b", T0) == Mismatch()


async def test_keys_are_scoped(store: Any) -> None:
    other_user = IdempotencyKey("user:2|/tracker.v1.SetupService/CreateClient", "r-1")
    other_rpc = IdempotencyKey("user:1|/tracker.v1.SetupService/CreateBrand", "r-1")
    assert await claim(store, KEY, b"a", T0) == Started()
    assert await claim(store, other_user, b"a", T0) == Started()
    assert await claim(store, other_rpc, b"b", T0) == Started()


async def test_an_abandoned_key_starts_anew(store: Any) -> None:
    assert await claim(store, KEY, b"a", T0) == Started()
    await store.abandon(KEY)
    assert await claim(store, KEY, b"b", T0) == Started()


async def test_a_lapsed_lease_is_taken_over_by_the_same_request_only(store: Any) -> None:
    assert await claim(store, KEY, b"a", T0) == Started()
    await store.renew(KEY, T0 + 2 * LEASE)
    assert await claim(store, KEY, b"a", T0 + LEASE) == Running()
    assert await claim(store, KEY, b"b", T0 + 3 * LEASE) == Mismatch()
    assert await claim(store, KEY, b"a", T0 + 3 * LEASE) == Started()


async def test_an_expired_record_answers_nothing_and_is_purged(store: Any) -> None:
    assert await claim(store, KEY, b"a", T0) == Started()
    await store.finish(KEY, b"response")
    other = IdempotencyKey(KEY.scope, "r-2")
    assert await claim(store, other, b"a", T0 + TTL) == Started()
    await store.finish(other, b"second")
    assert await store.purge(T0 + TTL, 100) == 1  # KEY only: ``other`` lives a day more
    assert await claim(store, KEY, b"z", T0 + TTL) == Started()
    assert await claim(store, other, b"a", T0 + TTL) == Replay(b"second")


def test_request_ids_are_bounded() -> None:
    for bad in ("", "x" * 129, "tab\there"):
        with pytest.raises(InvalidArgument) as exc:
            IdempotencyKey("s", bad)
        assert exc.value.violations[0].field == "request_id"
    IdempotencyKey("s", str(uuid.uuid4()))
