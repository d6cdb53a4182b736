"""Domain errors. Adapters map them once to transport codes (gRPC: see adapters.grpc.errors)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta


class DomainError(Exception):
    """Base of every error the domain or a use case raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One offending input field, named as on the wire (e.g. ``location.radius_m``)."""

    field: str
    reason: str


class InvalidArgument(DomainError):
    """The input is malformed; ``violations`` names every offending field."""

    def __init__(self, field: str, reason: str) -> None:
        self.violations: tuple[FieldViolation, ...] = (FieldViolation(field, reason),)
        super().__init__(f"{field}: {reason}")

    @classmethod
    def of(cls, violations: list[FieldViolation]) -> InvalidArgument:
        err = cls(violations[0].field, violations[0].reason)
        err.violations = tuple(violations)
        err.args = ("; ".join(f"{v.field}: {v.reason}" for v in violations),)
        return err

    def prefixed(self, prefix: str) -> InvalidArgument:
        """The same violations with their field paths under ``prefix``."""
        return InvalidArgument.of(
            [
                FieldViolation(f"{prefix}.{v.field}" if prefix else v.field, v.reason)
                for v in self.violations
            ]
        )


@contextmanager
def field_prefix(prefix: str) -> Iterator[None]:
    """Re-raise InvalidArgument with field paths nested under ``prefix``."""
    try:
        yield
    except InvalidArgument as err:
        raise err.prefixed(prefix) from None


class NotFound(DomainError):
    """The resource does not exist, or the caller may not know that it does."""

    def __init__(self, kind: str, ident: str) -> None:
        self.kind = kind
        self.ident = ident
        super().__init__(f"{kind} {ident!r} not found")


class AlreadyExists(DomainError):
    """A unique property (``field``) is already taken. ``value`` is for logs and tests; the
    caller is told only ``public``, which names the field: the value may be taken by
    another client, and whose it is, or that it is the caller's own, is not told."""

    def __init__(self, kind: str, field: str, value: str) -> None:
        self.kind = kind
        self.field = field
        self.value = value
        super().__init__(f"{kind} with {field} {value!r} already exists")

    @property
    def public(self) -> str:
        return f"{self.field} is not available: it is already in use"


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the operation (e.g. children exist)."""

    def __init__(self, reason: str, subject: str = "", kind: str = "DEPENDENTS_EXIST") -> None:
        self.reason = reason
        self.subject = subject
        self.kind = kind
        """What failed, for the PreconditionFailure detail's ``type``."""
        super().__init__(reason)


class PermissionDenied(DomainError):
    """The caller is known but may not do this."""


class Unauthenticated(DomainError):
    """The caller could not be identified."""


class TransientError(DomainError):
    """A failure that says nothing about the request: the same call may succeed if retried
    after ``retry_after_s`` seconds (a hint, not a promise)."""

    retry_after_s: float


class DependencyUnavailable(TransientError):
    """A backing service (PostgreSQL, Redis, ...) cannot be reached; retrying may help."""

    def __init__(self, dependency: str, detail: str = "", retry_after_s: float = 1.0) -> None:
        self.dependency = dependency
        self.retry_after_s = retry_after_s
        super().__init__(f"{dependency} unavailable" + (f": {detail}" if detail else ""))


class Aborted(TransientError):
    """Lost a race with concurrent work (deadlock, serialization failure, lock timeout);
    nothing of the failed transaction was kept, and retrying it is expected to succeed."""

    def __init__(self, dependency: str, reason: str, retry_after_s: float = 0.1) -> None:
        self.dependency = dependency
        self.reason = reason
        self.retry_after_s = retry_after_s
        super().__init__(f"{dependency}: {reason}; retry")


class TooManyAttempts(DomainError):
    """The caller must wait ``retry_after`` before trying again (a rate limit or lockout)."""

    def __init__(self, reason: str, retry_after: timedelta) -> None:
        self.reason = reason
        self.retry_after = max(retry_after, timedelta(seconds=1))
        super().__init__(f"{reason}; retry in {self.retry_after_s} s")

    @property
    def retry_after_s(self) -> int:
        """Whole seconds, rounded up: what ``retry-after`` says."""
        return math.ceil(self.retry_after.total_seconds())
