"""An in-process gRPC stack (collector + query) on ephemeral loopback ports, run by the real
runtime and container against the per-test database and the real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from adapters.grpc.health import HealthReporter
from servers import endpoints
from servers.config import Settings
from servers.runtime import Process
from tests.conftest import REDIS_URL
from tracker.v1 import setup_query_service_pb2_grpc, setup_service_pb2_grpc


@dataclass
class Stack:
    setup: setup_service_pb2_grpc.SetupServiceStub
    query: setup_query_service_pb2_grpc.SetupQueryServiceStub
    health: health_pb2_grpc.HealthStub
    reporter: HealthReporter


@pytest.fixture
async def stack_for() -> AsyncIterator:
    """Start a stack for given settings; everything is stopped at the end of the test."""
    started: list[tuple[Process, list[grpc.aio.Channel]]] = []

    async def start(settings: Settings) -> Stack:
        process = Process(settings, [endpoints.collector(settings), endpoints.query(settings)])
        ports = await process.start()
        channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{ports[name]}") for name in ("collector", "query")
        ]
        started.append((process, channels))
        assert process.reporter is not None
        return Stack(
            setup_service_pb2_grpc.SetupServiceStub(channels[0]),
            setup_query_service_pb2_grpc.SetupQueryServiceStub(channels[1]),
            health_pb2_grpc.HealthStub(channels[1]),
            process.reporter,
        )

    yield start
    for process, channels in started:
        for ch in channels:
            await ch.close()
        await process.stop(0)


def stack_settings(database_url: str, redis_url: str = REDIS_URL, **kw: object) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        collector_port=0,
        query_port=0,
        health_port=0,
        health_check_interval_s=0.2,
        **kw,
    )


@pytest.fixture
async def stack(database_url: str, stack_for) -> Stack:
    return await stack_for(stack_settings(database_url))
