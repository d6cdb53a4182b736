"""Changes pushed (issue 17): the events of the caller's clients (a page, or a stream from a
cursor), webhooks per client, and one turn of the webhook deliverer."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from domain.access import Principal, require_manage, require_read
from domain.errors import InvalidArgument, NotFound
from domain.events import (
    SIGNATURE_HEADER,
    Delivery,
    DeliveryPolicy,
    DeliveryState,
    DueDelivery,
    Event,
    EventKind,
    NewWebhook,
    Webhook,
    signature,
)
from domain.limits import MAX_REDELIVER_EVENTS
from domain.model import SealedSecret
from domain.pagination import Page, PageRequest
from domain.ports.common import Clock
from domain.ports.events import (
    DeliveryFilter,
    EventFeed,
    EventFilter,
    WebhookRepository,
    WebhookSender,
)
from domain.ports.keys import SecretSealer

MAX_REDELIVER = MAX_REDELIVER_EVENTS


def _context(webhook_id: uuid.UUID) -> bytes:
    """The sealed secret is bound to its webhook (it cannot be moved to another row)."""
    return b"webhook-secret:" + webhook_id.bytes


class EventQueries:
    def __init__(self, feed: EventFeed) -> None:
        self._feed = feed

    def filter(
        self, caller: Principal, client_id: uuid.UUID | None, kinds: frozenset[EventKind]
    ) -> EventFilter:
        """The events the caller may see: of ``client_id`` (NOT_FOUND if hidden) or of
        every client it reads."""
        if client_id is not None:
            require_read(caller, client_id, "client", client_id)
        return EventFilter(caller.readable_clients(), client_id, kinds)

    async def start(self) -> str:
        return await self._feed.start()

    async def after(
        self, cursor: str, filter: EventFilter, limit: int
    ) -> tuple[list[tuple[Event, str]], str]:
        return await self._feed.after(cursor, filter, limit)

    async def list(
        self,
        caller: Principal,
        client_id: uuid.UUID | None,
        kinds: frozenset[EventKind],
        page: PageRequest,
    ) -> Page[Event]:
        return await self._feed.page(self.filter(caller, client_id, kinds), page)


class WebhookAdmin:
    """Webhooks of a client: CLIENT_ADMIN creates and deletes them and redelivers dead
    letters; its readers see them (never their secret) and their deliveries."""

    def __init__(self, repo: WebhookRepository, sealer: SecretSealer, clock: Clock) -> None:
        self._repo, self._sealer, self._clock = repo, sealer, clock

    async def create(self, caller: Principal, new: NewWebhook) -> Webhook:
        require_manage(caller, new.client_id, "client", new.client_id)
        new.check()
        webhook_id = uuid.uuid4()
        sealed = self._sealer.seal(new.secret.encode(), _context(webhook_id))
        return await self._repo.create(
            new, webhook_id, sealed.kek_id, sealed.ciphertext, self._clock.now()
        )

    async def _visible(self, caller: Principal, webhook_id: uuid.UUID) -> Webhook:
        hook = await self._repo.get(webhook_id)
        if hook is None:
            raise NotFound("webhook", str(webhook_id))
        require_read(caller, hook.client_id, "webhook", webhook_id)
        return hook

    async def get(self, caller: Principal, webhook_id: uuid.UUID) -> Webhook:
        return await self._visible(caller, webhook_id)

    async def list(
        self, caller: Principal, client_id: uuid.UUID | None, page: PageRequest
    ) -> Page[Webhook]:
        if client_id is not None and not caller.can_read(client_id):
            return Page([], None)
        return await self._repo.list_webhooks(caller.readable_clients(), client_id, page)

    async def delete(self, caller: Principal, webhook_id: uuid.UUID) -> None:
        hook = await self._visible(caller, webhook_id)
        require_manage(caller, hook.client_id, "webhook", webhook_id)
        if not await self._repo.delete(webhook_id):
            raise NotFound("webhook", str(webhook_id))

    async def deliveries(
        self,
        caller: Principal,
        webhook_id: uuid.UUID | None,
        state: DeliveryState | None,
        page: PageRequest,
    ) -> Page[Delivery]:
        if webhook_id is not None:
            await self._visible(caller, webhook_id)
        return await self._repo.deliveries(
            DeliveryFilter(caller.readable_clients(), webhook_id, state), page
        )

    async def redeliver(
        self, caller: Principal, webhook_id: uuid.UUID, event_ids: Sequence[int]
    ) -> int:
        hook = await self._visible(caller, webhook_id)
        require_manage(caller, hook.client_id, "webhook", webhook_id)
        if len(event_ids) > MAX_REDELIVER:
            raise InvalidArgument("event_ids", f"at most {MAX_REDELIVER}")
        if any(i <= 0 for i in event_ids):
            raise InvalidArgument("event_ids", "event ids are positive")
        return await self._repo.redeliver(webhook_id, event_ids)


@dataclass(frozen=True, slots=True)
class DeliveryTurn:
    claimed: int
    delivered: int
    failed: int
    dead: int
    unopenable: int = 0


class DeliverWebhooks:
    """One turn: claim due deliveries (with a lease), POST each signed, record the outcome:
    delivered, again after a backoff, or dead after the policy's last attempt."""

    def __init__(
        self,
        repo: WebhookRepository,
        sender: WebhookSender,
        sealer: SecretSealer,
        clock: Clock,
        policy: DeliveryPolicy,
        batch: int = 50,
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        self._repo, self._sender, self._sealer, self._clock = repo, sender, sealer, clock
        self._policy, self._batch, self._lease = policy, batch, lease

    async def __call__(self) -> DeliveryTurn:
        claimed = await self._repo.claim(self._batch, self._lease, self._clock.now())
        outcomes = await asyncio.gather(*(self._one(d, k, s) for d, k, s in claimed))
        return DeliveryTurn(
            claimed=len(claimed),
            delivered=outcomes.count("delivered"),
            failed=outcomes.count("failed"),
            dead=outcomes.count("dead"),
            unopenable=outcomes.count("unopenable"),
        )

    async def _one(self, due: DueDelivery, kek_id: str, sealed: bytes) -> str:
        try:
            secret = self._sealer.unseal(SealedSecret(kek_id, sealed), _context(due.webhook_id))
        except Exception as err:  # a KEK gone from the ring: dead, with the reason
            await self._repo.failed(
                due.webhook_id, due.event.id, None, f"secret: {err}", None, self._clock.now()
            )
            return "unopenable"
        body = json.dumps(due.event.payload(), separators=(",", ":"), sort_keys=True).encode()
        now = self._clock.now()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature(secret, int(now.timestamp()), body),
            "Tracker-Event-Id": str(due.event.id),
            "Tracker-Event-Kind": due.event.kind.value,
            "Tracker-Webhook-Id": str(due.webhook_id),
        }
        status, error = await self._sender.send(due.url, body, headers)
        done = self._clock.now()
        if status is not None and 200 <= status < 300:
            await self._repo.delivered(due.webhook_id, due.event.id, status, done)
            return "delivered"
        attempts = due.attempts + 1
        if self._policy.dead_after(attempts):
            await self._repo.failed(due.webhook_id, due.event.id, status, error, None, done)
            return "dead"
        await self._repo.failed(
            due.webhook_id,
            due.event.id,
            status,
            error,
            done + self._policy.backoff(attempts),
            done,
        )
        return "failed"
