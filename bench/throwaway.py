"""A migrated, throwaway database for one benchmark run."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from adapters.postgres.migrator import migrate

ADMIN_URL = os.environ.get(
    "TRACKER_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@asynccontextmanager
async def throwaway_database() -> AsyncIterator[str]:
    """Create and migrate a database, yield its URL, drop it afterwards."""
    name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = urlunsplit(urlsplit(ADMIN_URL)._replace(path="/" + name))
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
