"""Port of idempotent creates: where request_ids, their requests' fingerprints and their
responses are kept (domain/idempotency.py has the rules)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from domain.idempotency import Claim, IdempotencyKey


class IdempotencyStore(Protocol):
    """Keys with the fingerprint of their request, a lease while the first call runs, and
    its response once finished; each operation is atomic on its own."""

    async def claim(
        self,
        key: IdempotencyKey,
        fingerprint: bytes,
        now: datetime,
        lease_until: datetime,
        expire_time: datetime,
    ) -> Claim:
        """``Started`` if the key is new, expired, or its holder's lease ran out (the key is
        then held until ``lease_until``, its record kept until ``expire_time``); otherwise
        what the key holds: ``Mismatch`` for another fingerprint, else ``Replay`` or
        ``Running``."""
        ...

    async def renew(self, key: IdempotencyKey, lease_until: datetime) -> None:
        """Extends the lease of a running key."""
        ...

    async def finish(self, key: IdempotencyKey, response: bytes) -> None:
        """Keeps ``response`` for the key's retries; the lease ends."""
        ...

    async def abandon(self, key: IdempotencyKey) -> None:
        """Forgets a running key (its call failed and changed nothing): a retry runs anew."""
        ...

    async def purge(self, now: datetime, limit: int) -> int:
        """Deletes up to ``limit`` records expired at ``now``; how many."""
        ...
