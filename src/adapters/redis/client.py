"""The Redis client resource and its health probe."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis


def open_redis(url: str, timeout_s: float = 2.0) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=30,
        retry_on_timeout=False,
    )


async def redis_resource(url: str) -> AsyncIterator[aioredis.Redis]:
    """dependency-injector Resource: one client (with its own pool) per process."""
    client = open_redis(url)
    try:
        yield client
    finally:
        await client.aclose()


class RedisProbe:
    name = "redis"

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def check(self) -> None:
        if not await self._client.ping():
            raise ConnectionError("PING not answered")


def hash_tagged(prefix: str) -> str:
    """``prefix`` as a Redis Cluster hash tag (``{fetch}``), unless it already holds one:
    every key under it hashes to one slot, so each Lua script call (and each MULTI) touches
    one slot, as Redis Cluster requires. The price: one queue lives on one node."""
    start = prefix.find("{")
    if start >= 0 and prefix.find("}", start + 1) > start + 1:  # Redis's rule: non-empty tag
        return prefix
    return "{" + prefix + "}"
