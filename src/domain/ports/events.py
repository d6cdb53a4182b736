"""Ports of changes pushed: the event feed (resumable positions), webhooks and deliveries."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from domain.events import (
    Delivery,
    DeliveryState,
    DueDelivery,
    Event,
    EventKind,
    NewWebhook,
    Webhook,
)
from domain.pagination import Page, PageRequest


@dataclass(frozen=True, slots=True)
class EventFilter:
    client_ids: frozenset[uuid.UUID] | None = None
    """The clients the caller may read (None: every client)."""
    client_id: uuid.UUID | None = None
    kinds: frozenset[EventKind] = frozenset()
    """Empty: every kind."""


class EventFeed(Protocol):
    """Committed events in a resumable order. A cursor is opaque: each event read comes with
    the cursor just after it; reading after a cursor gives every event committed later,
    each once, whatever order the writers committed in."""

    async def start(self) -> str:
        """The cursor of now (what is committed is behind it)."""
        ...

    async def after(
        self, cursor: str, filter: EventFilter, limit: int
    ) -> tuple[list[tuple[Event, str]], str]:
        """At most ``limit`` events after ``cursor``, each with its own cursor, and the
        cursor to read on from (past the last one; past everything committed if fewer)."""
        ...

    async def page(self, filter: EventFilter, page: PageRequest) -> Page[Event]:
        """Newest first, by id."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    client_ids: frozenset[uuid.UUID] | None = None
    webhook_id: uuid.UUID | None = None
    state: DeliveryState | None = None


class WebhookRepository(Protocol):
    async def create(
        self, new: NewWebhook, id: uuid.UUID, kek_id: str, sealed: bytes, now: datetime
    ) -> Webhook: ...

    async def get(self, id: uuid.UUID) -> Webhook | None: ...

    async def list_webhooks(
        self,
        client_ids: frozenset[uuid.UUID] | None,
        client_id: uuid.UUID | None,
        page: PageRequest,
    ) -> Page[Webhook]: ...

    async def delete(self, id: uuid.UUID) -> bool: ...

    async def deliveries(self, filter: DeliveryFilter, page: PageRequest) -> Page[Delivery]:
        """Newest event first."""
        ...

    async def redeliver(self, webhook_id: uuid.UUID, event_ids: Sequence[int]) -> int:
        """Dead deliveries (those of ``event_ids``; empty: all) back to pending, attempts
        reset; returns how many."""
        ...

    async def claim(
        self, limit: int, lease: timedelta, now: datetime
    ) -> list[tuple[DueDelivery, str, bytes]]:
        """Due pending deliveries, each pushed ``lease`` ahead (a worker that dies leaves
        it to be tried again), with the sealed secret's KEK id and ciphertext."""
        ...

    async def delivered(
        self, webhook_id: uuid.UUID, event_id: int, status: int, now: datetime
    ) -> None: ...

    async def failed(
        self,
        webhook_id: uuid.UUID,
        event_id: int,
        status: int | None,
        error: str,
        next_attempt: datetime | None,
        now: datetime,
    ) -> None:
        """One more attempt failed: pending again at ``next_attempt``, or dead (None)."""
        ...


class WebhookSender(Protocol):
    async def send(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str]:
        """POST ``body``; (HTTP status, error text). Status None: no answer (timeout,
        refused). 2xx is success."""
        ...
