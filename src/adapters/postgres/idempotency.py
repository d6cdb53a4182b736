"""``IdempotencyStore`` in PostgreSQL: table ``idempotency_keys`` (migration 0009). Each
operation is one short transaction of its own, apart from the create it guards."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from adapters.postgres.pool import unavailable_on_connection_error
from domain.idempotency import Claim, IdempotencyKey, Mismatch, Replay, Running, Started

# A new key, an expired record (whatever it held), or a running key of the same request
# whose holder's lease ran out: the key becomes this call's. Otherwise the row is left alone
# (and, in a race, this statement waits for the other inserter's transaction first).
_CLAIM = """
INSERT INTO idempotency_keys AS k
       (scope, request_id, fingerprint, response, lease_until, expire_time)
VALUES ($1, $2, $3, NULL, $5, $6)
ON CONFLICT (scope, request_id) DO UPDATE
   SET fingerprint = excluded.fingerprint, response = NULL, lease_until = excluded.lease_until,
       expire_time = excluded.expire_time, create_time = now()
 WHERE k.expire_time <= $4
    OR (k.response IS NULL AND k.lease_until <= $4 AND k.fingerprint = excluded.fingerprint)
RETURNING true"""


class PostgresIdempotencyStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self,
        key: IdempotencyKey,
        fingerprint: bytes,
        now: datetime,
        lease_until: datetime,
        expire_time: datetime,
    ) -> Claim:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                while True:
                    args = (key.scope, key.request_id, fingerprint, now, lease_until, expire_time)
                    if await conn.fetchval(_CLAIM, *args):
                        return Started()
                    # A new statement: it sees the row the claim above found (committed).
                    row = await conn.fetchrow(
                        """SELECT fingerprint, response FROM idempotency_keys
                           WHERE scope = $1 AND request_id = $2""",
                        key.scope,
                        key.request_id,
                    )
                    if row is None:
                        continue  # abandoned in between: claim again
                    if row["fingerprint"] != fingerprint:
                        return Mismatch()
                    if row["response"] is None:
                        return Running()
                    return Replay(bytes(row["response"]))

    async def _execute(self, sql: str, *args: object) -> str:
        with unavailable_on_connection_error():
            async with self._pool.acquire() as conn:
                return str(await conn.execute(sql, *args))

    async def renew(self, key: IdempotencyKey, lease_until: datetime) -> None:
        await self._execute(
            """UPDATE idempotency_keys SET lease_until = $3
               WHERE scope = $1 AND request_id = $2 AND response IS NULL""",
            key.scope,
            key.request_id,
            lease_until,
        )

    async def finish(self, key: IdempotencyKey, response: bytes) -> None:
        await self._execute(
            """UPDATE idempotency_keys SET response = $3
               WHERE scope = $1 AND request_id = $2""",
            key.scope,
            key.request_id,
            response,
        )

    async def abandon(self, key: IdempotencyKey) -> None:
        await self._execute(
            """DELETE FROM idempotency_keys
               WHERE scope = $1 AND request_id = $2 AND response IS NULL""",
            key.scope,
            key.request_id,
        )

    async def purge(self, now: datetime, limit: int) -> int:
        status = await self._execute(
            """DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                   SELECT ctid FROM idempotency_keys WHERE expire_time <= $1
                   ORDER BY expire_time LIMIT $2 FOR UPDATE SKIP LOCKED))""",
            now,
            limit,
        )
        return int(status.rsplit(" ", 1)[-1])
