"""Running a create once per request_id (AIP-155), for every create RPC alike: the transport
hands over the call, how to encode its response and the request's fingerprint."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from domain.errors import Aborted, TransientError
from domain.idempotency import (
    IDEMPOTENCY_LEASE,
    IDEMPOTENCY_TTL,
    IDEMPOTENCY_WAIT,
    IdempotencyKey,
    Mismatch,
    Replay,
    RequestIdReused,
    Running,
    Started,
)
from domain.ports.common import Clock
from domain.ports.idempotency import IdempotencyStore

T = TypeVar("T")
log = logging.getLogger("tracker.idempotency")

PURGE_EVERY = 100
PURGE_BATCH = 1000
"""Every ``PURGE_EVERY`` first calls, up to ``PURGE_BATCH`` expired records are deleted: ten
times the rate they expire at, so the table stays near one TTL of creates."""


class IdempotentCreates:
    """A create with a key runs at most once while its record lives (``ttl``): retries get
    the first response, a concurrent retry waits for the first call (up to ``wait``, then
    ABORTED), and a call that failed leaves nothing behind, so its retry runs anew."""

    def __init__(
        self,
        store: IdempotencyStore,
        clock: Clock,
        ttl: timedelta = IDEMPOTENCY_TTL,
        lease: timedelta = IDEMPOTENCY_LEASE,
        wait: timedelta = IDEMPOTENCY_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store, self._clock = store, clock
        self._ttl, self._lease, self._wait, self._sleep = ttl, lease, wait, sleep
        self._finished = 0
        self._first_calls: set[asyncio.Task[Any]] = set()

    async def run(
        self,
        key: IdempotencyKey,
        fingerprint: bytes,
        create: Callable[[], Awaitable[T]],
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
    ) -> T:
        replayed = await self._claim(key, fingerprint)
        if replayed is not None:
            return decode(replayed)
        # Shielded: a caller that gives up (deadline, cancel) does not stop the create
        # half-way; it completes and is kept, so the caller's retry gets its answer.
        first = asyncio.create_task(self._first_call(key, create, encode))
        self._first_calls.add(first)
        first.add_done_callback(self._first_calls.discard)
        return await asyncio.shield(first)

    async def _first_call(
        self, key: IdempotencyKey, create: Callable[[], Awaitable[T]], encode: Callable[[T], bytes]
    ) -> T:
        renewing = asyncio.create_task(self._renew(key), name="idempotency-lease")
        try:
            result = await create()
        except BaseException:
            # The create changed nothing (its transaction rolled back): free the key. If that
            # fails too, the lease runs out and a retry takes the key over.
            with contextlib.suppress(Exception):
                await self._store.abandon(key)
            raise
        finally:
            renewing.cancel()
        try:
            await self._store.finish(key, encode(result))
        except TransientError:
            # The create happened: answering it beats a retry that might create again.
            log.warning("idempotency: response not kept", extra={"scope": key.scope})
        self._finished += 1
        if self._finished % PURGE_EVERY == 0:
            with contextlib.suppress(TransientError):
                await self._store.purge(self._clock.now(), PURGE_BATCH)
        return result

    async def _claim(self, key: IdempotencyKey, fingerprint: bytes) -> bytes | None:
        """None once the key is this call's; the first call's response for a retry."""
        deadline = self._clock.now() + self._wait
        pause = 0.02
        while True:
            now = self._clock.now()
            lease_until, expire_time = now + self._lease, now + self._ttl
            claim = await self._store.claim(key, fingerprint, now, lease_until, expire_time)
            if isinstance(claim, Started):
                return None
            if isinstance(claim, Replay):
                return claim.response
            if isinstance(claim, Mismatch):
                raise RequestIdReused()
            assert isinstance(claim, Running)
            if now >= deadline:
                raise Aborted(
                    "request_id", "a call with this request_id is still running", retry_after_s=1.0
                )
            await self._sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _renew(self, key: IdempotencyKey) -> None:
        every = self._lease.total_seconds() / 3
        while True:
            await self._sleep(every)
            with contextlib.suppress(TransientError):
                await self._store.renew(key, self._clock.now() + self._lease)
