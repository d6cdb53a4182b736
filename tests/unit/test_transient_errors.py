"""Transient dependency failures are never INTERNAL: each driver failure maps to UNAVAILABLE
or ABORTED with a retry hint, and the adapter's retry repeats only what is transient."""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest
import redis.exceptions
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from adapters.grpc.errors import to_status, transient
from adapters.postgres.pool import retrying
from domain.errors import Aborted, DependencyUnavailable, InvalidArgument

UNAVAILABLE = [
    asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("connection is closed"),
    asyncpg.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.CannotConnectNowError("the database system is starting up"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
    ConnectionRefusedError(111, "Connection refused"),
    TimeoutError(),
    redis.exceptions.ConnectionError("Error 111 connecting"),
    redis.exceptions.TimeoutError("Timeout reading from socket"),
]
ABORTED = [
    asyncpg.DeadlockDetectedError("deadlock detected"),
    asyncpg.SerializationError("could not serialize access"),
    asyncpg.LockNotAvailableError("canceling statement due to lock timeout"),
]


def _details(status: grpc.Status) -> dict[str, object]:
    proto = rpc_status.from_call(_Call(status))
    assert proto is not None
    out: dict[str, object] = {}
    for d in proto.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            if d.Is(kind.DESCRIPTOR):
                msg = kind()
                d.Unpack(msg)
                out[kind.DESCRIPTOR.name] = msg
    return out


class _Call:
    def __init__(self, status: grpc.Status) -> None:
        self._s = status

    def code(self) -> grpc.StatusCode:
        return self._s.code

    def details(self) -> str:
        return self._s.details

    def trailing_metadata(self) -> object:
        return self._s.trailing_metadata


@pytest.mark.parametrize("exc", UNAVAILABLE, ids=lambda e: type(e).__name__)
def test_connection_failures_are_unavailable_with_a_retry_hint(exc: BaseException) -> None:
    err = transient(exc)
    assert isinstance(err, DependencyUnavailable)
    status = to_status(err)
    assert status.code == grpc.StatusCode.UNAVAILABLE
    details = _details(status)
    assert details["ErrorInfo"].reason == "DEPENDENCY_UNAVAILABLE"  # type: ignore[attr-defined]
    assert details["RetryInfo"].retry_delay.ToMilliseconds() > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("exc", ABORTED, ids=lambda e: type(e).__name__)
def test_lost_races_are_aborted_with_a_retry_hint(exc: BaseException) -> None:
    err = transient(exc)
    assert isinstance(err, Aborted)
    status = to_status(err)
    assert status.code == grpc.StatusCode.ABORTED
    assert "RetryInfo" in _details(status)


def test_a_wrapped_driver_failure_is_found_through_its_cause() -> None:
    outer = RuntimeError("while storing")
    outer.__cause__ = asyncpg.DeadlockDetectedError("deadlock detected")
    assert isinstance(transient(outer), Aborted)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad"),
        asyncpg.UniqueViolationError("duplicate key"),
        asyncpg.ClientConfigurationError("bad dsn"),
        redis.exceptions.ResponseError("WRONGTYPE"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_defects_are_not_transient(exc: BaseException) -> None:
    assert transient(exc) is None


def test_progress_travels_in_error_info_and_plain_trailers() -> None:
    status = to_status(
        DependencyUnavailable("postgres", "AdminShutdownError"), {"committed_messages": "3"}
    )
    info = _details(status)["ErrorInfo"]
    assert dict(info.metadata) == {  # type: ignore[attr-defined]
        "dependency": "postgres",
        "committed_messages": "3",
    }
    assert ("tracker-committed-messages", "3") in status.trailing_metadata
    bad = to_status(InvalidArgument("reports[3].confidence", "must be 1, 2 or 3"), {"n": "1"})
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(bad)["ErrorInfo"].reason == "STREAM_INTERRUPTED"  # type: ignore[attr-defined]


async def test_retrying_repeats_transient_failures_a_bounded_number_of_times() -> None:
    runs: list[int] = []

    async def flaky() -> str:
        runs.append(1)
        if len(runs) < 3:
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return "done"

    assert await retrying(flaky, attempts=4, base_s=0.001) == "done"
    assert len(runs) == 3

    runs.clear()

    async def down() -> str:
        runs.append(1)
        raise asyncpg.ConnectionDoesNotExistError("closed")

    with pytest.raises(DependencyUnavailable):
        await retrying(down, attempts=3, base_s=0.001)
    assert len(runs) == 3


async def test_retrying_does_not_repeat_a_defect() -> None:
    runs: list[int] = []

    async def broken() -> None:
        runs.append(1)
        raise asyncpg.UniqueViolationError("duplicate key")

    with pytest.raises(asyncpg.UniqueViolationError):
        await retrying(broken, base_s=0.001)
    assert len(runs) == 1


async def test_retrying_starts_no_new_run_once_its_time_budget_is_spent() -> None:
    runs: list[int] = []

    async def slow_and_down() -> None:
        runs.append(1)
        await asyncio.sleep(0.05)
        raise asyncpg.ConnectionDoesNotExistError("closed")

    with pytest.raises(DependencyUnavailable):
        await retrying(slow_and_down, attempts=10, base_s=0.001, budget_s=0.01)
    assert len(runs) == 1
