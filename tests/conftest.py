"""Shared fixtures: a throwaway PostgreSQL+PostGIS database per test, cloned from a migrated
template made once per session, and the real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
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


def _in_thread(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class Databases:
    """Throwaway clones of the templates, made one ahead and dropped behind in threads of
    their own: a test waits for neither (DROP DATABASE waits for a checkpoint, which on a
    busy server takes long; drops that wait together share one). Each clone is made from
    the template when asked for or ahead of time, never reused."""

    def __init__(self) -> None:
        self._create = ThreadPoolExecutor(1, thread_name_prefix="tracker-test-create")
        self._drop = ThreadPoolExecutor(4, thread_name_prefix="tracker-test-drop")
        self._ahead: dict[str, tuple[str, Future[None]]] = {}
        self._dropping: list[Future[None]] = []

    def _start(self, template: str) -> tuple[str, Future[None]]:
        name = f"tracker_test_{uuid.uuid4().hex[:12]}"
        return name, self._create.submit(_in_thread, create_database(name, template))

    async def take(self, template: str) -> str:
        name, made = self._ahead.pop(template, None) or self._start(template)
        self._ahead[template] = self._start(template)
        await asyncio.wrap_future(made)
        return name

    def give_back(self, name: str) -> None:
        self._dropping.append(self._drop.submit(_in_thread, drop_database(name)))

    async def retire(self, template: str) -> None:
        """Before ``template`` is dropped: the clone made ahead of it, dropped."""
        ahead = self._ahead.pop(template, None)
        if ahead is not None:
            name, made = ahead
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(made)
            self.give_back(name)

    def close(self) -> None:
        for template in list(self._ahead):
            name, made = self._ahead.pop(template)
            with contextlib.suppress(Exception):
                made.result()
            self.give_back(name)
        self._create.shutdown()
        self._drop.shutdown()
        for dropped in self._dropping:
            dropped.result()  # a drop that failed fails the session's teardown


DATABASES = Databases()


@contextlib.asynccontextmanager
async def throwaway_database(template: str) -> AsyncIterator[str]:
    """The name of a fresh clone of ``template``, dropped (in the background) after."""
    name = await DATABASES.take(template)
    try:
        yield name
    finally:
        DATABASES.give_back(name)


@contextlib.asynccontextmanager
async def throwaway_pool(template: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on a fresh clone of ``template``."""
    async with throwaway_database(template) as name:
        pool = await open_pool(url_for(name), max_size=4)
        try:
            yield pool
        finally:
            await pool.close()


@pytest.fixture(scope="session", autouse=True)
def _databases() -> Any:
    yield DATABASES
    DATABASES.close()


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
    await DATABASES.retire(name)
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
    await DATABASES.retire(name)
    await drop_database(name)


@pytest.fixture
async def geo_database_url(geo_template_database: str) -> AsyncIterator[str]:
    """A throwaway database with the cities loaded."""
    async with throwaway_database(geo_template_database) as name:
        yield url_for(name)


@pytest.fixture
async def database_url(template_database: str) -> AsyncIterator[str]:
    async with throwaway_database(template_database) as name:
        yield url_for(name)


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
