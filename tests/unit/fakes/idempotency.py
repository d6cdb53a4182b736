"""In-memory ``IdempotencyStore``; it passes the same contract suite as PostgreSQL's
(tests/contract/test_idempotency_ports.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.idempotency import Claim, IdempotencyKey, Mismatch, Replay, Running, Started


@dataclass
class _Record:
    fingerprint: bytes
    response: bytes | None
    lease_until: datetime
    expire_time: datetime


class FakeIdempotencyStore:
    def __init__(self) -> None:
        self.records: dict[IdempotencyKey, _Record] = {}

    async def claim(
        self,
        key: IdempotencyKey,
        fingerprint: bytes,
        now: datetime,
        lease_until: datetime,
        expire_time: datetime,
    ) -> Claim:
        r = self.records.get(key)
        if (
            r is None
            or r.expire_time <= now
            or (r.response is None and r.lease_until <= now and r.fingerprint == fingerprint)
        ):
            self.records[key] = _Record(fingerprint, None, lease_until, expire_time)
            return Started()
        if r.fingerprint != fingerprint:
            return Mismatch()
        return Running() if r.response is None else Replay(r.response)

    async def renew(self, key: IdempotencyKey, lease_until: datetime) -> None:
        r = self.records.get(key)
        if r is not None and r.response is None:
            r.lease_until = lease_until

    async def finish(self, key: IdempotencyKey, response: bytes) -> None:
        r = self.records.get(key)
        if r is not None:
            r.response = response

    async def abandon(self, key: IdempotencyKey) -> None:
        r = self.records.get(key)
        if r is not None and r.response is None:
            del self.records[key]

    async def purge(self, now: datetime, limit: int) -> int:
        expired = sorted(
            (k for k, r in self.records.items() if r.expire_time <= now),
            key=lambda k: self.records[k].expire_time,
        )[:limit]
        for k in expired:
            del self.records[k]
        return len(expired)
