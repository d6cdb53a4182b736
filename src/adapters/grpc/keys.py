"""Servicers of tag keys: generation, allocation, import, export."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from adapters.grpc import convert as cv
from adapters.grpc.auth import caller
from tracker.v1 import key_query_service_pb2 as kq
from tracker.v1 import key_query_service_pb2_grpc as kq_grpc
from tracker.v1 import key_service_pb2 as k
from tracker.v1 import key_service_pb2_grpc as k_grpc
from tracker.v1 import resources_pb2 as pb
from usecases.keys import ExportFormat, KeyUseCases

Ctx = grpc.aio.ServicerContext

_FORMATS = {
    kq.KEY_EXPORT_FORMAT_UNSPECIFIED: ExportFormat.CSV,
    kq.KEY_EXPORT_FORMAT_CSV: ExportFormat.CSV,
    kq.KEY_EXPORT_FORMAT_KEYS: ExportFormat.KEYS,
}


class KeyServicer(k_grpc.KeyServiceServicer):
    def __init__(self, uc: KeyUseCases) -> None:
        self._uc = uc

    async def CreateKeyBatch(
        self, request: k.CreateKeyBatchRequest, context: Ctx
    ) -> k.CreateKeyBatchResponse:
        batch = await self._uc.create_key_batch(caller(), request.count, request.label)
        return k.CreateKeyBatchResponse(
            key_batch=pb.KeyBatch(
                id=str(batch.id),
                label=batch.label,
                size=batch.size,
                create_time=cv.ts(batch.create_time),
            )
        )

    async def AllocateTags(
        self, request: k.AllocateTagsRequest, context: Ctx
    ) -> k.AllocateTagsResponse:
        n = await self._uc.allocate_tags(
            caller(), cv.parse_id(request.client_id, "client_id"), list(request.mac_addresses)
        )
        return k.AllocateTagsResponse(allocated_count=n)

    async def ImportTrackers(
        self, request: k.ImportTrackersRequest, context: Ctx
    ) -> k.ImportTrackersResponse:
        trackers = await self._uc.import_trackers(
            caller(),
            cv.parse_id(request.production_run_id, "production_run_id"),
            list(request.mac_addresses),
        )
        return k.ImportTrackersResponse(trackers=[cv.tracker_pb(t) for t in trackers])

    async def ImportExternalTrackers(
        self, request: k.ImportExternalTrackersRequest, context: Ctx
    ) -> k.ImportExternalTrackersResponse:
        trackers = await self._uc.import_external_trackers(
            caller(),
            cv.parse_id(request.production_run_id, "production_run_id"),
            list(request.private_keys),
        )
        return k.ImportExternalTrackersResponse(trackers=[cv.tracker_pb(t) for t in trackers])


class KeyQueryServicer(kq_grpc.KeyQueryServiceServicer):
    def __init__(self, uc: KeyUseCases) -> None:
        self._uc = uc

    async def ExportKeyBatch(
        self, request: kq.ExportKeyBatchRequest, context: Ctx
    ) -> AsyncIterator[kq.ExportKeyBatchResponse]:
        fmt = _FORMATS.get(request.format, "")
        chunks = await self._uc.export_key_batch(
            caller(), cv.parse_id(request.key_batch_id, "key_batch_id"), fmt
        )
        async for chunk in chunks:
            yield kq.ExportKeyBatchResponse(chunk=chunk)
