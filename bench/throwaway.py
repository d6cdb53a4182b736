"""A migrated, throwaway database for one benchmark run, with the report partitions a
deployment's maintenance makes (so reports land where they would in production)."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from adapters.postgres.migrator import migrate
from adapters.postgres.partitions import PostgresReportPartitions
from adapters.postgres.pool import open_pool
from domain.reports import partition_months

ADMIN_URL = os.environ.get(
    "TRACKER_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@asynccontextmanager
async def throwaway_database(prefix: str = "tracker_bench") -> AsyncIterator[str]:
    """Create and migrate a database, yield its URL, drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(ADMIN_URL)._replace(path="/" + name))
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool = await open_pool(url, max_size=1)
        try:
            months = partition_months(datetime.now(UTC), back_months=1, ahead_months=3)
            await PostgresReportPartitions(pool).ensure(months)
        finally:
            await pool.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
