"""Benchmark of what observability costs a call: unary calls per second through a real
grpc.aio server on loopback with (a) no interceptors (the baseline), (b) the interceptors
every server runs (standard metrics + access log; tracing off, the default), (c) the same
with OpenTelemetry tracing on (server span per call, batch export to memory). The servicer
does nothing, so the figures are the per-call overhead at its most visible. Rounds are
interleaved; prints CPU microseconds per call and the ratios against the baseline of the same
run.

    .venv/bin/python -m bench.telemetry --calls 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from adapters.grpc.errors import DomainErrorInterceptor
from adapters.grpc.telemetry import AccessLogInterceptor, RpcMetricsInterceptor
from adapters.prometheus import RpcMetrics

METHOD = "/tracker.v1.BenchService/Echo"


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def _server(interceptors: list[Any]) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(interceptors=interceptors)
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("tracker.v1.BenchService", {"Echo": handler}),)
    )
    return server, server.add_insecure_port("127.0.0.1:0")


async def _cpu_us(interceptors: list[Any], calls: int, concurrency: int) -> float:
    """CPU time of this process (client and server) per call, in microseconds: on a shared
    machine wall-clock rates swing with the neighbours, CPU time much less."""
    server, port = _server(interceptors)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(METHOD)

            async def caller(n: int) -> None:
                for _ in range(n):
                    await echo(b"x")

            await caller(100)  # warm up
            started = time.process_time()
            await asyncio.gather(*(caller(calls // concurrency) for _ in range(concurrency)))
            done = calls // concurrency * concurrency
            return (time.process_time() - started) / done * 1e6
    finally:
        await server.stop(0)


async def main(calls: int, rounds: int) -> None:
    logging.basicConfig(level=logging.INFO)  # the access lines of successful calls: DEBUG
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    ours = [RpcMetricsInterceptor(RpcMetrics()), AccessLogInterceptor()]
    errors = DomainErrorInterceptor()
    configs = {
        "baseline (no interceptor)": [],
        "error mapping only": [errors],
        "+ metrics": [RpcMetricsInterceptor(RpcMetrics()), errors],
        "+ access log": [AccessLogInterceptor(), errors],
        "+ metrics + access log (tracing off)": [*ours, errors],
        "+ metrics + access log + tracing on": [aio_server_interceptor(provider), *ours, errors],
    }
    costs: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, interceptors in configs.items():
            costs[name].append(await _cpu_us(interceptors, calls, concurrency=16))
    base = statistics.median(costs["baseline (no interceptor)"])
    print(f"\n{calls} unary calls, 16 at a time, x {rounds} rounds: CPU per call (client and")
    print("server in this process; median), and against the baseline of this run:")
    for name, values in costs.items():
        cost = statistics.median(values)
        print(f"  {name:36} {cost:6.0f} us/call  {cost / base:5.2f}x  (+{cost - base:4.0f} us)")
    provider.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
