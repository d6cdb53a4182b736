"""The gRPC edge of issue 10: where a call comes from (peer, trusted proxy header), and how
a lockout and a clash are put on the wire."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from google.rpc import error_details_pb2, status_pb2

from adapters.grpc.auth import client_address, parse_networks
from adapters.grpc.errors import RETRY_AFTER, to_status
from domain.errors import AlreadyExists, TooManyAttempts


class Context:
    def __init__(self, peer: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._peer, self._metadata = peer, metadata

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:192.0.2.1:5555", "192.0.2.1"),
        ("ipv6:[2001:db8::1]:5555", "2001:db8::1"),
        ("ipv6:%5B::1%5D:5555", "::1"),
        ("unix:/tmp/socket", "unix:/tmp/socket"),
    ],
)
def test_the_peer_gives_the_address(peer: str, address: str) -> None:
    assert client_address(Context(peer)) == address  # type: ignore[arg-type]


FORWARDED = (("x-forwarded-for", "198.51.100.1, 203.0.113.5"),)


def address(peer: str, header: str = "", trusted: str = "", md: Any = FORWARDED) -> str:
    return client_address(Context(peer, md), header, parse_networks(trusted))  # type: ignore[arg-type]


def test_the_header_counts_only_when_configured_and_from_a_trusted_proxy() -> None:
    assert address("ipv4:10.1.2.3:1") == "10.1.2.3"
    assert address("ipv4:10.1.2.3:1", "x-forwarded-for") == "203.0.113.5"
    assert address("ipv4:10.1.2.3:1", "x-forwarded-for", "10.0.0.0/8") == "203.0.113.5"
    assert address("ipv4:192.0.2.9:1", "x-forwarded-for", "10.0.0.0/8") == "192.0.2.9"
    # Garbage in the header, or none at all: the peer.
    assert address("ipv4:10.1.2.3:1", "x-forwarded-for", md=(("x-forwarded-for", "x"),)) == (
        "10.1.2.3"
    )
    assert address("ipv4:10.1.2.3:1", "x-forwarded-for", md=()) == "10.1.2.3"


def details(status: Any) -> list[Any]:
    (raw,) = [v for k, v in status.trailing_metadata if k == "grpc-status-details-bin"]
    return list(status_pb2.Status.FromString(raw).details)


def test_a_lockout_carries_retry_info_and_a_retry_after_trailer() -> None:
    status = to_status(TooManyAttempts("too many sign-in attempts", timedelta(seconds=59.2)))
    assert status.code.name == "RESOURCE_EXHAUSTED"
    assert status.details == "too many sign-in attempts; retry in 60 s"
    assert (RETRY_AFTER, "60") in status.trailing_metadata
    info = error_details_pb2.RetryInfo()
    assert details(status)[0].Unpack(info)
    assert info.retry_delay.seconds == 60


def test_a_clash_names_the_field_and_not_the_value() -> None:
    status = to_status(AlreadyExists("tracker", "mac_address", "C4:00:00:00:00:01"))
    assert status.code.name == "ALREADY_EXISTS"
    assert status.details == "mac_address is not available: it is already in use"
    assert all("C4:00" not in str(v) for _, v in status.trailing_metadata)
