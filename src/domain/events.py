"""Changes pushed (issue 17): events of a client (status changes, trackers going silent or
reporting again, outages opened and closed), webhooks that receive them, and the rules of a
delivery: the signature a receiver checks, the pause before the next attempt, when it is
given up (the dead-letter list)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from domain.errors import InvalidArgument
from domain.limits import MAX_WEBHOOK_URL_LENGTH


class EventKind(enum.Enum):
    STATUS_CHANGED = "STATUS_CHANGED"
    TRACKER_SILENT = "TRACKER_SILENT"
    TRACKER_REPORTING_AGAIN = "TRACKER_REPORTING_AGAIN"
    OUTAGE_OPENED = "OUTAGE_OPENED"
    OUTAGE_CLOSED = "OUTAGE_CLOSED"


@dataclass(frozen=True, slots=True)
class Event:
    """One change of one client. ``id`` increases with the insert, not with the commit."""

    id: int
    client_id: uuid.UUID
    kind: EventKind
    occur_time: datetime
    create_time: datetime
    data: Mapping[str, Any]
    tracker_id: uuid.UUID | None = None
    outage_id: int | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON object a webhook receives (and the one a stream's ``data_json`` holds
        under ``data``)."""
        return {
            "id": self.id,
            "kind": self.kind.value,
            "client_id": str(self.client_id),
            "tracker_id": str(self.tracker_id) if self.tracker_id else None,
            "outage_id": self.outage_id,
            "occur_time": self.occur_time.isoformat(),
            "create_time": self.create_time.isoformat(),
            "data": dict(self.data),
        }


MAX_URL_LENGTH = MAX_WEBHOOK_URL_LENGTH
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 256
MAX_DISPLAY_NAME = 200


def check_url(url: str, field_name: str = "webhook.url") -> str:
    """An absolute http(s) URL with a host; anything else is INVALID_ARGUMENT."""
    if not url:
        raise InvalidArgument(field_name, "required")
    if len(url) > MAX_URL_LENGTH:
        raise InvalidArgument(field_name, f"at most {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidArgument(field_name, "no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidArgument(field_name, "not a URL") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(field_name, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidArgument(field_name, "must name a host")
    if port == 0:
        raise InvalidArgument(field_name, "port 0 is not a port")
    if parts.username or parts.password:
        raise InvalidArgument(field_name, "no credentials in the URL (use the secret)")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        if len(parts.hostname) > 253:
            raise InvalidArgument(field_name, "host name too long") from None
    return url


def check_secret(secret: str, field_name: str = "secret") -> bytes:
    if not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise InvalidArgument(field_name, f"{MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters")
    if "\x00" in secret:
        raise InvalidArgument(field_name, "no NUL")
    return secret.encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    id: uuid.UUID
    client_id: uuid.UUID
    url: str
    kinds: frozenset[EventKind] = frozenset()
    """Empty: every kind."""
    display_name: str = ""
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class NewWebhook:
    client_id: uuid.UUID
    url: str
    secret: str = field(repr=False)
    kinds: frozenset[EventKind] = frozenset()
    display_name: str = ""

    def check(self) -> None:
        """Checked after access (a caller learns nothing of a client it cannot manage)."""
        check_url(self.url)
        check_secret(self.secret)
        if len(self.display_name) > MAX_DISPLAY_NAME or "\x00" in self.display_name:
            raise InvalidArgument("webhook.display_name", "at most 200 characters, no NUL")


class DeliveryState(enum.Enum):
    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    DEAD = "DEAD"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One event for one webhook."""

    webhook_id: uuid.UUID
    event: Event
    state: DeliveryState
    attempts: int
    next_attempt_time: datetime
    last_attempt_time: datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    deliver_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery the worker claimed: where to send it and the secret to sign it with."""

    webhook_id: uuid.UUID
    url: str
    secret: bytes = field(repr=False)
    event: Event
    attempts: int


SIGNATURE_HEADER = "Tracker-Signature"
"""``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the webhook's secret>``."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, header: str, body: bytes, now: int, tolerance_s: int = 300
) -> bool:
    """What a receiver does: the header's timestamp is recent and its v1 MAC matches."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - t) > tolerance_s:
        return False
    expected = signature(secret, t, body).split(",v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Attempts of one delivery: after the n-th failure the next comes after
    ``base * 2**(n-1)`` (at most ``max_backoff``) times a jitter of 0.5..1.5; after
    ``max_attempts`` failures the delivery is dead (listed, redeliverable)."""

    max_attempts: int = 8
    base: timedelta = timedelta(seconds=5)
    max_backoff: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidArgument("webhook_max_attempts", "at least 1")

    def dead_after(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def backoff(self, attempts: int, rng: random.Random | None = None) -> timedelta:
        exp = min(self.base * (2 ** max(0, min(attempts - 1, 30))), self.max_backoff)
        jitter: float = (rng or random).uniform(0.5, 1.5)
        out: timedelta = exp * jitter
        return out


def kinds_of(values: Sequence[str]) -> frozenset[EventKind]:
    return frozenset(EventKind(v) for v in values)
