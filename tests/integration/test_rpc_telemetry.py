"""Issue 15: every call of a server is counted under the Prometheus gRPC names
(``grpc_server_started_total``, ``grpc_server_handled_total``, ``grpc_server_handling_seconds``)
and leaves one access line: DEBUG when it succeeded (unless sampled), always logged when it
failed."""

from __future__ import annotations

import logging
import uuid

import grpc
import pytest
from prometheus_client import REGISTRY

from adapters.grpc.telemetry import AccessLogInterceptor, CallInfo, _call
from servers.log import ContextFilter
from tests.integration.conftest import Stack
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as sq
from tracker.v1 import setup_service_pb2 as s

pytestmark = pytest.mark.integration

SERVICE = "tracker.v1.SetupQueryService"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_calls_are_counted_under_the_standard_grpc_names(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    client = (
        await stack.setup.CreateClient(s.CreateClientRequest(client=pb.Client(display_name="M")))
    ).client
    unary = {"grpc_type": "unary", "grpc_service": SERVICE, "grpc_method": "GetClient"}
    before = {
        "started": sample("grpc_server_started_total", **unary),
        "ok": sample("grpc_server_handled_total", **unary, grpc_code="OK"),
        "nf": sample("grpc_server_handled_total", **unary, grpc_code="NOT_FOUND"),
        "timed": sample("grpc_server_handling_seconds_count", **unary),
    }
    caplog.set_level(logging.DEBUG, logger="tracker.access")
    await stack.query.GetClient(sq.GetClientRequest(id=client.id))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.query.GetClient(sq.GetClientRequest(id=str(uuid.uuid4())))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND

    assert sample("grpc_server_started_total", **unary) == before["started"] + 2
    assert sample("grpc_server_handled_total", **unary, grpc_code="OK") == before["ok"] + 1
    assert sample("grpc_server_handled_total", **unary, grpc_code="NOT_FOUND") == before["nf"] + 1
    assert sample("grpc_server_handling_seconds_count", **unary) == before["timed"] + 2
    # no series under the old, non-standard name
    assert REGISTRY.get_sample_value("tracker_rpc_requests_total", {}) is None

    lines = [r for r in caplog.records if r.name == "tracker.access"]
    codes = [(r.levelno, getattr(r, "code", None)) for r in lines[-2:]]
    assert codes == [(logging.DEBUG, "OK"), (logging.INFO, "NOT_FOUND")]


def test_access_lines_are_debug_unless_sampled_and_failures_always_logged() -> None:
    never, always = AccessLogInterceptor(sample=0.0), AccessLogInterceptor(sample=1.0)
    assert never._level(grpc.StatusCode.OK) == logging.DEBUG
    assert always._level(grpc.StatusCode.OK) == logging.INFO
    for interceptor in (never, always):
        assert interceptor._level(grpc.StatusCode.NOT_FOUND) == logging.INFO
        assert interceptor._level(grpc.StatusCode.INTERNAL) == logging.WARNING
        assert interceptor._level(grpc.StatusCode.UNAVAILABLE) == logging.WARNING
    some = AccessLogInterceptor(sample=0.25)
    infos = sum(some._level(grpc.StatusCode.OK) == logging.INFO for _ in range(4000))
    assert 800 < infos < 1200


def test_a_line_written_during_a_call_names_the_call_the_caller_and_the_trace() -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    info = CallInfo(
        "/tracker.v1.SetupService/CreateClient",
        user_id="u-1",
        client_ids="c-1,c-2",
        traceparent=f"00-{trace_id}-00f067aa0ba902b7-01",
    )
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    reset = _call.set(info)
    try:
        assert ContextFilter().filter(record)
    finally:
        _call.reset(reset)
    assert record.trace_id == trace_id
    assert record.method == info.method
    # without a traceparent (tracing off, a plain client) a call still has an id of its own
    fresh, other = CallInfo("/m"), CallInfo("/m")
    assert len(fresh.call_id) == 32
    assert fresh.call_id != other.call_id
    assert (record.user_id, record.client_ids) == ("u-1", "c-1,c-2")
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    ContextFilter().filter(outside)
    assert not hasattr(outside, "trace_id")
    assert not hasattr(outside, "user_id")
