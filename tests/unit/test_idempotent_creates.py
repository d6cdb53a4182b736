"""IdempotentCreates over the fake store (which passes the PostgreSQL store's contract) and a
fake clock that only the tests move (a pause just lets the other tasks run)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from domain.errors import Aborted, DependencyUnavailable, NotFound
from domain.idempotency import IDEMPOTENCY_TTL, IdempotencyKey, RequestIdReused
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.idempotency import FakeIdempotencyStore
from usecases.idempotency import PURGE_EVERY, IdempotentCreates

KEY = IdempotencyKey("user:1|/svc/Create", "r-1")


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    async def create(self) -> str:
        self.calls += 1
        return f"created-{self.calls}"


def creates(store: FakeIdempotencyStore, clock: FakeClock) -> IdempotentCreates:
    async def sleep(seconds: float) -> None:
        await asyncio.sleep(0)

    return IdempotentCreates(store, clock, sleep=sleep)


async def run(uc: IdempotentCreates, counter: Counter, fp: bytes = b"a") -> str:
    return await uc.run(KEY, fp, counter.create, str.encode, bytes.decode)


async def test_a_retry_answers_the_first_result_until_it_expires() -> None:
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()
    uc = creates(store, clock)
    assert await run(uc, counter) == "created-1"
    clock.set(clock.now() + IDEMPOTENCY_TTL - timedelta(seconds=1))
    assert await run(uc, counter) == "created-1"
    clock.set(clock.now() + timedelta(seconds=1))
    assert await run(uc, counter) == "created-2"
    assert counter.calls == 2


async def test_another_request_with_the_key_is_refused_and_not_run() -> None:
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()
    uc = creates(store, clock)
    await run(uc, counter)
    with pytest.raises(RequestIdReused) as exc:
        await run(uc, counter, b"b")
    assert exc.value.kind == "REQUEST_ID_REUSED"
    assert counter.calls == 1


async def test_a_failed_create_frees_the_key() -> None:
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()
    uc = creates(store, clock)

    async def fails() -> str:
        raise NotFound("brand", "x")

    with pytest.raises(NotFound):
        await uc.run(KEY, b"a", fails, str.encode, bytes.decode)
    assert store.records == {}
    assert await run(uc, counter, b"b") == "created-1"


async def test_a_retry_waits_for_the_running_first_call() -> None:
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()
    uc = creates(store, clock)
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return await counter.create()

    first = asyncio.create_task(uc.run(KEY, b"a", slow, str.encode, bytes.decode))
    await asyncio.sleep(0)
    retry = asyncio.create_task(run(uc, counter))
    for _ in range(3):
        await asyncio.sleep(0)
    gate.set()
    assert await first == await retry == "created-1"
    assert counter.calls == 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_retry_gives_up_with_aborted_while_the_first_call_holds_its_lease() -> None:
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()
    uc = creates(store, clock)
    never = asyncio.Event()

    async def stuck() -> str:
        await never.wait()
        return "never"

    first = asyncio.create_task(uc.run(KEY, b"a", stuck, str.encode, bytes.decode))
    await settle()
    retry = asyncio.create_task(run(uc, counter))
    await settle()
    for _ in range(11):  # the holder renews its lease as the seconds pass
        clock.advance(timedelta(seconds=1))
        await settle()
    with pytest.raises(Aborted):
        await retry
    assert counter.calls == 0
    never.set()
    assert await first == "never"
    assert await run(uc, counter) == "never"


async def test_a_caller_that_gives_up_does_not_stop_its_create() -> None:
    """A client deadline cancels the call, not the create: it completes and is kept, so the
    client's retry gets it instead of making a second one."""
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()
    uc = creates(store, clock)
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return await counter.create()

    first = asyncio.create_task(uc.run(KEY, b"a", slow, str.encode, bytes.decode))
    await settle()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    retry = asyncio.create_task(run(uc, counter))
    await settle()
    gate.set()
    assert await retry == "created-1"
    assert counter.calls == 1


async def test_a_dead_holders_key_is_taken_over_after_its_lease() -> None:
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()
    uc = creates(store, clock)
    now = clock.now()
    await store.claim(KEY, b"a", now, now + timedelta(seconds=5), now + IDEMPOTENCY_TTL)
    retry = asyncio.create_task(run(uc, counter))
    await settle()
    assert not retry.done()
    clock.advance(timedelta(seconds=5))
    assert await retry == "created-1"  # the lease ran out: the retry ran it


async def test_the_answer_stands_when_keeping_it_fails() -> None:
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()

    async def down(key: IdempotencyKey, response: bytes) -> None:
        raise DependencyUnavailable("postgres")

    store.finish = down  # type: ignore[method-assign]
    assert await run(creates(store, clock), counter) == "created-1"


async def test_expired_records_are_purged_as_creates_come() -> None:
    store, clock, counter = FakeIdempotencyStore(), FakeClock(), Counter()
    uc = creates(store, clock)
    for i in range(PURGE_EVERY // 2):
        await uc.run(
            IdempotencyKey("s", f"old-{i}"), b"a", counter.create, str.encode, bytes.decode
        )
    clock.advance(IDEMPOTENCY_TTL)
    for i in range(PURGE_EVERY // 2):
        await uc.run(
            IdempotencyKey("s", f"new-{i}"), b"a", counter.create, str.encode, bytes.decode
        )
    assert {k.request_id[:3] for k in store.records} == {"new"}
