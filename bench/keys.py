"""Benchmark of tag keys: key pairs generated and sealed per second on one core, and storing
them with COPY versus row-by-row INSERT (executemany) in the same run. Prints figures.

    .venv/bin/python -m bench.keys --keys 20000
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from adapters.keys import AesGcmSealer, FindMyKeyPairFactory
from adapters.postgres.keys import PostgresTagKeyRepository
from bench.throwaway import throwaway_database
from domain.keys import GeneratedKey, KeyBatch
from servers.config import Settings, kek_ring


async def bench(n: int) -> None:
    factory = FindMyKeyPairFactory()
    ring, active = kek_ring(Settings().security)
    sealer = AesGcmSealer(ring, active)
    t0 = time.perf_counter()
    keys = []
    for _ in range(n):
        private, public = factory.generate()
        keys.append(GeneratedKey(public, sealer.seal(private, public.hashed)))
    gen_s = time.perf_counter() - t0

    async with throwaway_database() as url:
        conn = await asyncpg.connect(url)
        try:
            repo = PostgresTagKeyRepository(conn)
            now = datetime.now(UTC)
            copy_batch = KeyBatch(id=uuid.uuid4(), label="copy", size=n, create_time=now)
            await repo.add_batch_header(copy_batch, active)
            t0 = time.perf_counter()
            async with conn.transaction():
                for start in range(0, n, 2000):
                    await repo.add_batch(copy_batch, keys[start : start + 2000], first_seq=start)
            copy_s = time.perf_counter() - t0
            await conn.execute("DELETE FROM tag_keys")
            insert_batch = KeyBatch(id=uuid.uuid4(), label="insert", size=n, create_time=now)
            await repo.add_batch_header(insert_batch, active)
            t0 = time.perf_counter()
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO tag_keys (id, batch_id, seq, mac_address, advertisement_key, "
                    "hashed_advertisement_key, private_key_ciphertext, private_key_kek_id) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    [
                        (
                            uuid.uuid4(),
                            insert_batch.id,
                            i,
                            k.mac_address.value,
                            k.advertisement_key.value,
                            k.advertisement_key.hashed,
                            k.sealed_private_key.ciphertext,
                            active,
                        )
                        for i, k in enumerate(keys)
                    ],
                )
            insert_s = time.perf_counter() - t0
        finally:
            await conn.close()
    print(f"keys                                  {n}")
    print(f"generate + seal (findmy, AES-GCM):    {n / gen_s:10.0f} keys/s on one core")
    print(f"store with COPY (2000 per chunk):     {n / copy_s:10.0f} keys/s")
    print(f"store with INSERT (executemany):      {n / insert_s:10.0f} keys/s")
    print(f"  ratio COPY/INSERT:                  {insert_s / copy_s:10.1f}x")
    per_key_s = gen_s / n + copy_s / n
    print(f"100,000 keys would take about         {100_000 * per_key_s:10.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=20000)
    asyncio.run(bench(ap.parse_args().keys))


if __name__ == "__main__":
    main()
