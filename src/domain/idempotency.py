"""Idempotent creates (AIP-155): a create carrying a ``request_id`` happens once.

The first call with a key runs and its response is kept until ``expire_time``; a retry with
the same key and the same request answers that response; the same key with another request
is refused (``RequestIdReused``). While the first call runs, it holds a lease that it renews;
a retry waits for it, and takes over only if the holder's lease ran out (the holder died).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from domain.errors import FailedPrecondition, InvalidArgument

MAX_REQUEST_ID_LENGTH = 128
"""request_id: at most this many characters (a UUID has 36)."""
IDEMPOTENCY_TTL = timedelta(hours=24)
"""How long a create's response is kept for retries with its request_id."""
IDEMPOTENCY_LEASE = timedelta(seconds=30)
"""How long a running create holds its key without renewing it (renewed every third)."""
IDEMPOTENCY_WAIT = timedelta(seconds=10)
"""How long a retry waits for the first call of its key to finish before ABORTED."""


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A request_id within its scope: the caller and the RPC (``user:<id>|/pkg.Svc/Rpc``),
    so that no caller can replay, or collide with, another caller's creates."""

    scope: str
    request_id: str

    def __post_init__(self) -> None:
        if not self.request_id:
            raise InvalidArgument("request_id", "required")
        if len(self.request_id) > MAX_REQUEST_ID_LENGTH:
            raise InvalidArgument(
                "request_id", f"at most {MAX_REQUEST_ID_LENGTH} characters (a UUID is advised)"
            )
        if not self.request_id.isprintable():
            raise InvalidArgument("request_id", "printable characters only (a UUID is advised)")


@dataclass(frozen=True, slots=True)
class Started:
    """The key is this call's: run it, then finish (or abandon) the key."""


@dataclass(frozen=True, slots=True)
class Replay:
    """The key's first call finished: answer its response."""

    response: bytes


@dataclass(frozen=True, slots=True)
class Running:
    """Another call with the key holds a live lease: wait and ask again."""


@dataclass(frozen=True, slots=True)
class Mismatch:
    """The key was used for another request."""


Claim = Started | Replay | Running | Mismatch


class RequestIdReused(FailedPrecondition):
    """FAILED_PRECONDITION, not ALREADY_EXISTS: nothing the caller asked to create exists;
    the request_id is bound to another request, and only a new request_id (or the original
    request) can succeed. ALREADY_EXISTS would read, to many clients, as "the create already
    happened", which for a different body is false."""

    def __init__(self) -> None:
        super().__init__(
            "request_id was already used for a different request; send a new request_id",
            subject="request_id",
            kind="REQUEST_ID_REUSED",
        )
