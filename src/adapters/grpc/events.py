"""Servicers of changes pushed: webhooks on the collector; events (a resumable stream, pages)
and webhooks' state on the query server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterable

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.errors import InvalidArgument
from domain.events import Delivery, DeliveryState, Event, EventKind, NewWebhook, Webhook
from domain.pagination import PageTokens
from tracker.v1 import event_query_service_pb2 as eq
from tracker.v1 import event_query_service_pb2_grpc as eq_grpc
from tracker.v1 import events_pb2 as pb
from tracker.v1 import webhook_service_pb2 as ws
from tracker.v1 import webhook_service_pb2_grpc as ws_grpc
from usecases.events import EventQueries, WebhookAdmin

Ctx = grpc.aio.ServicerContext

_KINDS = {
    pb.EVENT_KIND_STATUS_CHANGED: EventKind.STATUS_CHANGED,
    pb.EVENT_KIND_TRACKER_SILENT: EventKind.TRACKER_SILENT,
    pb.EVENT_KIND_TRACKER_REPORTING_AGAIN: EventKind.TRACKER_REPORTING_AGAIN,
    pb.EVENT_KIND_OUTAGE_OPENED: EventKind.OUTAGE_OPENED,
    pb.EVENT_KIND_OUTAGE_CLOSED: EventKind.OUTAGE_CLOSED,
}
_KIND_PB = {v: k for k, v in _KINDS.items()}
_STATES = {
    pb.DELIVERY_STATE_PENDING: DeliveryState.PENDING,
    pb.DELIVERY_STATE_DELIVERED: DeliveryState.DELIVERED,
    pb.DELIVERY_STATE_DEAD: DeliveryState.DEAD,
}
_STATE_PB = {v: k for k, v in _STATES.items()}
STREAM_BATCH = 500


def kinds_of(values: Iterable[int], field: str) -> frozenset[EventKind]:
    out: set[EventKind] = set()
    for v in values:
        if v == pb.EVENT_KIND_UNSPECIFIED:
            continue
        kind = _KINDS.get(v)
        if kind is None:
            raise InvalidArgument(field, "must be EventKind values")
        out.add(kind)
    return frozenset(out)


def event_pb(e: Event, cursor: str = "") -> pb.Event:
    out = pb.Event(
        id=e.id,
        kind=_KIND_PB[e.kind],
        client_id=str(e.client_id),
        tracker_id=str(e.tracker_id) if e.tracker_id else "",
        outage_id=e.outage_id or 0,
        occur_time=cv.ts(e.occur_time),
        create_time=cv.ts(e.create_time),
        data_json=json.dumps(dict(e.data), sort_keys=True),
        cursor=cursor,
    )
    return out


def webhook_pb(w: Webhook) -> pb.Webhook:
    return pb.Webhook(
        id=str(w.id),
        client_id=str(w.client_id),
        display_name=w.display_name,
        url=w.url,
        event_kinds=sorted(_KIND_PB[k] for k in w.kinds),
        create_time=cv.ts(w.create_time),
        update_time=cv.ts(w.update_time),
    )


def delivery_pb(d: Delivery) -> pb.WebhookDelivery:
    out = pb.WebhookDelivery(
        webhook_id=str(d.webhook_id),
        event=event_pb(d.event),
        state=_STATE_PB[d.state],
        attempt_count=d.attempts,
        last_http_status=d.last_status or 0,
        last_error=d.last_error or "",
    )
    if d.state is DeliveryState.PENDING:
        out.next_attempt_time.CopyFrom(cv.ts(d.next_attempt_time))
    if d.last_attempt_time is not None:
        out.last_attempt_time.CopyFrom(cv.ts(d.last_attempt_time))
    if d.deliver_time is not None:
        out.deliver_time.CopyFrom(cv.ts(d.deliver_time))
    return out


class WebhookServicer(ws_grpc.WebhookServiceServicer):
    def __init__(self, admin: WebhookAdmin) -> None:
        self._admin = admin

    async def CreateWebhook(
        self, request: ws.CreateWebhookRequest, context: Ctx
    ) -> ws.CreateWebhookResponse:
        w = request.webhook
        new = NewWebhook(
            client_id=cv.parse_id(w.client_id, "webhook.client_id"),
            url=w.url,
            secret=request.secret,
            kinds=kinds_of(w.event_kinds, "webhook.event_kinds"),
            display_name=w.display_name,
        )
        hook = await self._admin.create(caller(), new)
        return ws.CreateWebhookResponse(webhook=webhook_pb(hook))

    async def DeleteWebhook(
        self, request: ws.DeleteWebhookRequest, context: Ctx
    ) -> ws.DeleteWebhookResponse:
        await self._admin.delete(caller(), cv.parse_id(request.webhook_id, "webhook_id"))
        return ws.DeleteWebhookResponse()

    async def RedeliverWebhookEvents(
        self, request: ws.RedeliverWebhookEventsRequest, context: Ctx
    ) -> ws.RedeliverWebhookEventsResponse:
        count = await self._admin.redeliver(
            caller(), cv.parse_id(request.webhook_id, "webhook_id"), list(request.event_ids)
        )
        return ws.RedeliverWebhookEventsResponse(redelivered_count=count)


class EventQueryServicer(eq_grpc.EventQueryServiceServicer):
    def __init__(
        self,
        queries: EventQueries,
        webhooks: WebhookAdmin,
        tokens: PageTokens,
        poll_s: float = 0.5,
        heartbeat_s: float = 15.0,
    ) -> None:
        self._q, self._hooks, self._tokens = queries, webhooks, tokens
        self._poll_s, self._heartbeat_s = poll_s, heartbeat_s

    async def StreamEvents(
        self, request: eq.StreamEventsRequest, context: Ctx
    ) -> AsyncIterator[eq.StreamEventsResponse]:
        kinds = kinds_of(request.kinds, "kinds")
        filter = self._q.filter(caller(), cv.optional_id(request.client_id, "client_id"), kinds)
        start = request.after_cursor or await self._q.start()
        # the first read checks the cursor (INVALID_ARGUMENT before anything is sent)
        events, cursor = await self._q.after(start, filter, STREAM_BATCH)
        # a heartbeat first: a caller starting "from now" holds a cursor at once (the start,
        # not past the events just read: they are sent next)
        yield eq.StreamEventsResponse(cursor=start)
        beat = time.monotonic()
        while True:
            for e, c in events:
                yield eq.StreamEventsResponse(event=event_pb(e, c), cursor=c)
            if events:
                beat = time.monotonic()
            if len(events) < STREAM_BATCH:
                if time.monotonic() - beat >= self._heartbeat_s:
                    yield eq.StreamEventsResponse(cursor=cursor)
                    beat = time.monotonic()
                await asyncio.sleep(self._poll_s)
            events, cursor = await self._q.after(cursor, filter, STREAM_BATCH)

    async def ListEvents(
        self, request: eq.ListEventsRequest, context: Ctx
    ) -> eq.ListEventsResponse:
        client_id = cv.optional_id(request.client_id, "client_id")
        kinds = kinds_of(request.kinds, "kinds")
        scope = f"events:{client_id or ''}:{','.join(sorted(k.value for k in kinds))}"
        page = await self._q.list(
            caller(),
            client_id,
            kinds,
            self._tokens.request(request.page_size, request.page_token, scope),
        )
        return eq.ListEventsResponse(
            events=[event_pb(e) for e in page.items],
            next_page_token=self._tokens.next_token(page, scope),
        )

    async def GetWebhook(
        self, request: eq.GetWebhookRequest, context: Ctx
    ) -> eq.GetWebhookResponse:
        hook = await self._hooks.get(caller(), cv.parse_id(request.webhook_id, "webhook_id"))
        return eq.GetWebhookResponse(webhook=webhook_pb(hook))

    async def ListWebhooks(
        self, request: eq.ListWebhooksRequest, context: Ctx
    ) -> eq.ListWebhooksResponse:
        client_id = cv.optional_id(request.client_id, "client_id")
        scope = f"webhooks:{client_id or ''}"
        page = await self._hooks.list(
            caller(), client_id, self._tokens.request(request.page_size, request.page_token, scope)
        )
        return eq.ListWebhooksResponse(
            webhooks=[webhook_pb(w) for w in page.items],
            next_page_token=self._tokens.next_token(page, scope),
        )

    async def ListWebhookDeliveries(
        self, request: eq.ListWebhookDeliveriesRequest, context: Ctx
    ) -> eq.ListWebhookDeliveriesResponse:
        webhook_id = cv.optional_id(request.webhook_id, "webhook_id")
        state: DeliveryState | None = None
        if request.state != pb.DELIVERY_STATE_UNSPECIFIED:
            state = _STATES.get(request.state)
            if state is None:
                raise InvalidArgument("state", "must be one of the DeliveryState values")
        scope = f"deliveries:{webhook_id or ''}:{state.value if state else ''}"
        page = await self._hooks.deliveries(
            caller(),
            webhook_id,
            state,
            self._tokens.request(request.page_size, request.page_token, scope),
        )
        return eq.ListWebhookDeliveriesResponse(
            deliveries=[delivery_pb(d) for d in page.items],
            next_page_token=self._tokens.next_token(page, scope),
        )
