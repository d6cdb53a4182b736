"""Key batches and tag keys; batches are written with COPY."""

from __future__ import annotations

import uuid

import asyncpg

from domain.errors import AlreadyExists, NotFound
from domain.keys import GeneratedKey, KeyBatch, TagKey
from domain.model import AdvertisementKey, SealedSecret

_COLUMNS = (
    "id",
    "batch_id",
    "seq",
    "mac_address",
    "advertisement_key",
    "hashed_advertisement_key",
    "private_key_ciphertext",
    "private_key_kek_id",
)


def _tag_key(r: asyncpg.Record) -> TagKey:
    return TagKey(
        id=r["id"],
        batch_id=r["batch_id"],
        advertisement_key=AdvertisementKey(bytes(r["advertisement_key"])),
        sealed_private_key=SealedSecret(
            r["private_key_kek_id"], bytes(r["private_key_ciphertext"])
        ),
        client_id=r["client_id"],
    )


class PostgresTagKeyRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add_batch_header(self, batch: KeyBatch, kek_id: str) -> None:
        try:
            await self._conn.execute(
                "INSERT INTO key_batches (id, label, size, kek_id, create_time) "
                "VALUES ($1, $2, $3, $4, $5)",
                batch.id,
                batch.label,
                batch.size,
                kek_id,
                batch.create_time,
            )
        except asyncpg.UniqueViolationError:
            raise AlreadyExists("key batch", "id", str(batch.id)) from None

    async def add_batch(self, batch: KeyBatch, keys: list[GeneratedKey], first_seq: int) -> None:
        records = [
            (
                uuid.uuid4(),
                batch.id,
                first_seq + i,
                k.mac_address.value,
                k.advertisement_key.value,
                k.advertisement_key.hashed,
                k.sealed_private_key.ciphertext,
                k.sealed_private_key.kek_id,
            )
            for i, k in enumerate(keys)
        ]
        try:
            await self._conn.copy_records_to_table(
                "tag_keys", records=records, columns=list(_COLUMNS)
            )
        except asyncpg.UniqueViolationError as exc:
            name = exc.constraint_name or ""
            field = (
                "mac_address"
                if "mac" in name
                else "advertisement_key"
                if "advertisement" in name
                else "seq"
            )
            raise AlreadyExists("tag key", field, exc.detail or "") from None
        except asyncpg.ForeignKeyViolationError as exc:  # no such batch
            raise NotFound("parent of tag key", exc.detail or "") from None

    async def get_batch(self, batch_id: uuid.UUID) -> KeyBatch:
        row = await self._conn.fetchrow(
            "SELECT id, label, size, create_time FROM key_batches WHERE id = $1", batch_id
        )
        if row is None:
            raise NotFound("key batch", str(batch_id))
        return KeyBatch(
            id=row["id"], label=row["label"], size=row["size"], create_time=row["create_time"]
        )

    async def batch_keys(
        self, batch_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[tuple[int, TagKey]]:
        rows = await self._conn.fetch(
            "SELECT *, seq FROM tag_keys WHERE batch_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            batch_id,
            after_seq,
            limit,
        )
        return [(r["seq"], _tag_key(r)) for r in rows]

    async def by_macs(self, macs: list[str]) -> dict[str, TagKey]:
        rows = await self._conn.fetch(
            "SELECT * FROM tag_keys WHERE mac_address = ANY($1::text[]) FOR UPDATE", macs
        )
        return {r["mac_address"]: _tag_key(r) for r in rows}

    async def allocate(self, key_ids: list[uuid.UUID], client_id: uuid.UUID | None) -> None:
        """Allocation to a missing client changes nothing and is NotFound, without a
        violation aborting the unit of work's transaction."""
        try:
            known = await self._conn.fetchval(
                "WITH target AS (SELECT $2::uuid IS NULL"
                " OR EXISTS (SELECT 1 FROM clients WHERE id = $2) AS known),"
                # the transaction's time, as PostgreSQL tells it (no clock read in Python)
                " changed AS (UPDATE tag_keys SET client_id = $2, allocate_time = now()"
                " WHERE id = ANY($1::uuid[]) AND (SELECT known FROM target) RETURNING 1)"
                " SELECT known FROM target",
                key_ids,
                client_id,
            )
        except asyncpg.ForeignKeyViolationError as exc:  # the client went meanwhile
            raise NotFound("parent of tag key", exc.detail or "") from None
        if not known:
            raise NotFound(
                "parent of tag key",
                f'Key (client_id)=({client_id}) is not present in table "clients".',
            )
