"""Servicers of the setup API: protobuf in -> domain values -> use case -> protobuf out."""

from __future__ import annotations

from typing import Any

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from domain.errors import InvalidArgument, field_prefix
from domain.pagination import PageRequest, PageTokens
from domain.ports.setup import (
    BrandFilter,
    ClientFilter,
    LocationFilter,
    ProductionRunFilter,
    TrackerFilter,
)
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_query_service_pb2_grpc as q_grpc
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import setup_service_pb2_grpc as s_grpc
from usecases.setup import (
    NewBrand,
    NewClient,
    NewLocation,
    NewProductionRun,
    NewTracker,
    SetupUseCases,
)

Ctx = grpc.aio.ServicerContext


def _new_tracker(t: pb.Tracker, default_run: str = "") -> NewTracker:
    run = t.production_run_id or default_run
    return NewTracker(
        production_run_id=cv.parse_id(run, "production_run_id"),
        advertisement_key=t.advertisement_key,
        mac_address=t.mac_address,
        display_name=t.display_name,
    )


class SetupServicer(s_grpc.SetupServiceServicer):
    """Mutations of the setup; served by the collector."""

    def __init__(self, uc: SetupUseCases) -> None:
        self._uc = uc

    # -- clients ----------------------------------------------------------------------------
    async def CreateClient(
        self, request: s.CreateClientRequest, context: Ctx
    ) -> s.CreateClientResponse:
        with field_prefix("client"):
            client = await self._uc.create_client(caller(), NewClient(request.client.display_name))
        return s.CreateClientResponse(client=cv.client_pb(client))

    async def UpdateClient(
        self, request: s.UpdateClientRequest, context: Ctx
    ) -> s.UpdateClientResponse:
        changes = cv.changes_from("client", request.client, request.update_mask)
        with field_prefix("client"):
            client = await self._uc.update_client(caller(), cv.parse_id(request.client.id), changes)
        return s.UpdateClientResponse(client=cv.client_pb(client))

    async def DeleteClient(
        self, request: s.DeleteClientRequest, context: Ctx
    ) -> s.DeleteClientResponse:
        await self._uc.delete_client(caller(), cv.parse_id(request.id), force=request.force)
        return s.DeleteClientResponse()

    # -- brands -----------------------------------------------------------------------------
    async def CreateBrand(
        self, request: s.CreateBrandRequest, context: Ctx
    ) -> s.CreateBrandResponse:
        b = request.brand
        with field_prefix("brand"):
            brand = await self._uc.create_brand(
                caller(), NewBrand(cv.parse_id(b.client_id, "client_id"), b.display_name)
            )
        return s.CreateBrandResponse(brand=cv.brand_pb(brand))

    async def UpdateBrand(
        self, request: s.UpdateBrandRequest, context: Ctx
    ) -> s.UpdateBrandResponse:
        changes = cv.changes_from("brand", request.brand, request.update_mask)
        with field_prefix("brand"):
            brand = await self._uc.update_brand(caller(), cv.parse_id(request.brand.id), changes)
        return s.UpdateBrandResponse(brand=cv.brand_pb(brand))

    async def DeleteBrand(
        self, request: s.DeleteBrandRequest, context: Ctx
    ) -> s.DeleteBrandResponse:
        await self._uc.delete_brand(caller(), cv.parse_id(request.id), force=request.force)
        return s.DeleteBrandResponse()

    # -- production runs --------------------------------------------------------------------
    async def CreateProductionRun(
        self, request: s.CreateProductionRunRequest, context: Ctx
    ) -> s.CreateProductionRunResponse:
        r = request.production_run
        with field_prefix("production_run"):
            run = await self._uc.create_production_run(
                caller(),
                NewProductionRun(
                    brand_id=cv.parse_id(r.brand_id, "brand_id"),
                    display_name=r.display_name,
                    start_time=cv.from_ts(r, "start_time"),
                    end_time=cv.from_ts(r, "end_time"),
                ),
            )
        return s.CreateProductionRunResponse(production_run=cv.production_run_pb(run))

    async def UpdateProductionRun(
        self, request: s.UpdateProductionRunRequest, context: Ctx
    ) -> s.UpdateProductionRunResponse:
        r = request.production_run
        changes = cv.changes_from("production_run", r, request.update_mask)
        with field_prefix("production_run"):
            run = await self._uc.update_production_run(caller(), cv.parse_id(r.id), changes)
        return s.UpdateProductionRunResponse(production_run=cv.production_run_pb(run))

    async def DeleteProductionRun(
        self, request: s.DeleteProductionRunRequest, context: Ctx
    ) -> s.DeleteProductionRunResponse:
        await self._uc.delete_production_run(caller(), cv.parse_id(request.id), force=request.force)
        return s.DeleteProductionRunResponse()

    # -- locations --------------------------------------------------------------------------
    async def CreateLocation(
        self, request: s.CreateLocationRequest, context: Ctx
    ) -> s.CreateLocationResponse:
        loc = request.location
        with field_prefix("location"):
            location = await self._uc.create_location(
                caller(),
                NewLocation(
                    production_run_id=cv.parse_id(loc.production_run_id, "production_run_id"),
                    kind=cv.location_kind(loc.kind),
                    display_name=loc.display_name,
                    center=cv.geo_point(loc, "center"),
                    radius_m=cv.radius(loc.radius_m),
                ),
            )
        return s.CreateLocationResponse(location=cv.location_pb(location))

    async def UpdateLocation(
        self, request: s.UpdateLocationRequest, context: Ctx
    ) -> s.UpdateLocationResponse:
        changes = cv.changes_from("location", request.location, request.update_mask)
        with field_prefix("location"):
            location = await self._uc.update_location(
                caller(), cv.parse_id(request.location.id), changes
            )
        return s.UpdateLocationResponse(location=cv.location_pb(location))

    async def DeleteLocation(
        self, request: s.DeleteLocationRequest, context: Ctx
    ) -> s.DeleteLocationResponse:
        await self._uc.delete_location(caller(), cv.parse_id(request.id), force=request.force)
        return s.DeleteLocationResponse()

    # -- trackers ---------------------------------------------------------------------------
    async def CreateTracker(
        self, request: s.CreateTrackerRequest, context: Ctx
    ) -> s.CreateTrackerResponse:
        with field_prefix("tracker"):
            tracker = await self._uc.create_tracker(caller(), _new_tracker(request.tracker))
        return s.CreateTrackerResponse(tracker=cv.tracker_pb(tracker))

    async def BatchCreateTrackers(
        self, request: s.BatchCreateTrackersRequest, context: Ctx
    ) -> s.BatchCreateTrackersResponse:
        if request.production_run_id:
            cv.parse_id(request.production_run_id, "production_run_id")
        items = []
        for i, t in enumerate(request.trackers):
            with field_prefix(f"trackers[{i}]"):
                if not (t.production_run_id or request.production_run_id):
                    raise InvalidArgument("production_run_id", "required (here or on the batch)")
                items.append(_new_tracker(t, request.production_run_id))
        trackers = await self._uc.create_trackers(caller(), items)
        return s.BatchCreateTrackersResponse(trackers=[cv.tracker_pb(t) for t in trackers])

    async def UpdateTracker(
        self, request: s.UpdateTrackerRequest, context: Ctx
    ) -> s.UpdateTrackerResponse:
        changes = cv.changes_from("tracker", request.tracker, request.update_mask)
        with field_prefix("tracker"):
            tracker = await self._uc.update_tracker(
                caller(), cv.parse_id(request.tracker.id), changes
            )
        return s.UpdateTrackerResponse(tracker=cv.tracker_pb(tracker))

    async def DeleteTracker(
        self, request: s.DeleteTrackerRequest, context: Ctx
    ) -> s.DeleteTrackerResponse:
        await self._uc.delete_tracker(caller(), cv.parse_id(request.id), force=request.force)
        return s.DeleteTrackerResponse()


def page_scope(rpc: str, filter: object = "") -> str:
    """What a page token is bound to: this RPC and its filters."""
    return f"tracker.v1.SetupQueryService/{rpc}?{filter}"


class SetupQueryServicer(q_grpc.SetupQueryServiceServicer):
    """Reads of the setup; served by the query server."""

    def __init__(self, uc: SetupUseCases, tokens: PageTokens) -> None:
        self._uc = uc
        self._tokens = tokens

    def _page(self, request: Any, scope: str) -> PageRequest:
        return self._tokens.request(request.page_size, request.page_token, scope)

    async def GetClient(self, request: q.GetClientRequest, context: Ctx) -> q.GetClientResponse:
        return q.GetClientResponse(
            client=cv.client_pb(await self._uc.get_client(caller(), cv.parse_id(request.id)))
        )

    async def ListClients(
        self, request: q.ListClientsRequest, context: Ctx
    ) -> q.ListClientsResponse:
        key = page_scope("ListClients")
        page = await self._uc.list_clients(caller(), ClientFilter(), self._page(request, key))
        return q.ListClientsResponse(
            clients=[cv.client_pb(c) for c in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetBrand(self, request: q.GetBrandRequest, context: Ctx) -> q.GetBrandResponse:
        return q.GetBrandResponse(
            brand=cv.brand_pb(await self._uc.get_brand(caller(), cv.parse_id(request.id)))
        )

    async def ListBrands(self, request: q.ListBrandsRequest, context: Ctx) -> q.ListBrandsResponse:
        f = BrandFilter(client_id=cv.optional_id(request.client_id, "client_id"))
        key = page_scope("ListBrands", f)
        page = await self._uc.list_brands(caller(), f, self._page(request, key))
        return q.ListBrandsResponse(
            brands=[cv.brand_pb(b) for b in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetProductionRun(
        self, request: q.GetProductionRunRequest, context: Ctx
    ) -> q.GetProductionRunResponse:
        run = await self._uc.get_production_run(caller(), cv.parse_id(request.id))
        return q.GetProductionRunResponse(production_run=cv.production_run_pb(run))

    async def ListProductionRuns(
        self, request: q.ListProductionRunsRequest, context: Ctx
    ) -> q.ListProductionRunsResponse:
        f = ProductionRunFilter(
            brand_id=cv.optional_id(request.brand_id, "brand_id"),
            client_id=cv.optional_id(request.client_id, "client_id"),
        )
        key = page_scope("ListProductionRuns", f)
        page = await self._uc.list_production_runs(caller(), f, self._page(request, key))
        return q.ListProductionRunsResponse(
            production_runs=[cv.production_run_pb(r) for r in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetLocation(
        self, request: q.GetLocationRequest, context: Ctx
    ) -> q.GetLocationResponse:
        loc = await self._uc.get_location(caller(), cv.parse_id(request.id))
        return q.GetLocationResponse(location=cv.location_pb(loc))

    async def ListLocations(
        self, request: q.ListLocationsRequest, context: Ctx
    ) -> q.ListLocationsResponse:
        f = LocationFilter(
            production_run_id=cv.optional_id(request.production_run_id, "production_run_id"),
            kind=cv.location_kind(request.kind) if request.kind else None,
        )
        key = page_scope("ListLocations", f)
        page = await self._uc.list_locations(caller(), f, self._page(request, key))
        return q.ListLocationsResponse(
            locations=[cv.location_pb(x) for x in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )

    async def GetTracker(self, request: q.GetTrackerRequest, context: Ctx) -> q.GetTrackerResponse:
        t = await self._uc.get_tracker(caller(), cv.parse_id(request.id))
        return q.GetTrackerResponse(tracker=cv.tracker_pb(t))

    async def ListTrackers(
        self, request: q.ListTrackersRequest, context: Ctx
    ) -> q.ListTrackersResponse:
        f = TrackerFilter(
            client_id=cv.optional_id(request.client_id, "client_id"),
            production_run_id=cv.optional_id(request.production_run_id, "production_run_id"),
        )
        key = page_scope("ListTrackers", f)
        page = await self._uc.list_trackers(caller(), f, self._page(request, key))
        return q.ListTrackersResponse(
            trackers=[cv.tracker_pb(t) for t in page.items],
            next_page_token=self._tokens.next_token(page, key),
        )
