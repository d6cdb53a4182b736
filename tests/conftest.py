"""Shared fixtures: a throwaway PostgreSQL+PostGIS database per test, cloned from a migrated
template made once per session, and the real Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from adapters.geonames import geonames_cities
from adapters.postgres.geocoding import load_cities
from adapters.postgres.migrator import migrate
from adapters.postgres.pool import open_pool

ADMIN_URL = os.environ.get(
    "TRACKER_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("TRACKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def process_env(**settings: str) -> dict[str, str]:
    """The environment for a server process a test starts: this shell's, without any
    variable our configuration reads (a developer's exported ``DB_NAME`` or
    ``TRACKER_*`` would otherwise point the process elsewhere), plus ``settings``."""
    from servers.config import CONFIG_ENV, env_names

    ours = {*env_names().values(), CONFIG_ENV}
    return {**{k: v for k, v in os.environ.items() if k not in ours}, **settings}


def url_for(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path="/" + database))


async def create_database(name: str, template: str | None = None) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        suffix = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await admin.close()


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def template_database() -> AsyncIterator[str]:
    """A migrated database that each test clones (CREATE DATABASE ... TEMPLATE)."""
    name = f"tracker_test_tpl_{os.getpid()}"
    await create_database(name)
    conn = await asyncpg.connect(url_for(name))
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield name
    await drop_database(name)


@pytest.fixture(scope="session")
async def geo_template_database(template_database: str) -> AsyncIterator[str]:
    """The migrated template plus GeoNames cities (cities1000), for geocoding tests; kept
    apart because every clone of a template copies all of it."""
    name = f"{template_database}_geo"
    await create_database(name, template=template_database)
    conn = await asyncpg.connect(url_for(name))
    try:
        await load_cities(conn, geonames_cities(1000))
    finally:
        await conn.close()
    yield name
    await drop_database(name)


@pytest.fixture
async def geo_database_url(geo_template_database: str) -> AsyncIterator[str]:
    """A throwaway database with the cities loaded."""
    name = f"tracker_test_{uuid.uuid4().hex[:12]}"
    await create_database(name, template=geo_template_database)
    yield url_for(name)
    await drop_database(name)


@pytest.fixture
async def database_url(template_database: str) -> AsyncIterator[str]:
    name = f"tracker_test_{uuid.uuid4().hex[:12]}"
    await create_database(name, template=template_database)
    yield url_for(name)
    await drop_database(name)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await open_pool(database_url, max_size=4)
    yield p
    await p.close()


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()
