"""Detectors and links of a client (seed 003): create, update, delete on the collector; get
and list on the query server. Access as for setup resources: reads need the detector's client
to be visible, mutations CLIENT_ADMIN of it; another client's detector is NOT_FOUND."""

from __future__ import annotations

import builtins
import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from domain.access import Principal, require_manage, require_read
from domain.detectors import DEFAULT_MAX_SECONDS, Detector, Link, Radio, check_max_seconds
from domain.errors import InvalidArgument, NotFound
from domain.model import GeoPoint, new_id
from domain.pagination import Page, PageRequest
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.detectors import DetectorFilter, DetectorRepository, DetectorsUnitOfWork


@dataclass(frozen=True, slots=True)
class NewDetector:
    client_id: uuid.UUID
    display_name: str
    position: GeoPoint
    radios: tuple[Radio, ...]
    range_m: float = 0.0


async def readable_detector(
    caller: Principal, repo: DetectorRepository, detector_id: uuid.UUID
) -> Detector:
    """The detector if the caller may read it; otherwise what a missing one gives."""
    found = await repo.get(detector_id)
    if found is None:
        raise NotFound("detector", str(detector_id))
    require_read(caller, found.client_id, "detector", detector_id)
    return found


async def manageable_detector(
    caller: Principal, repo: DetectorRepository, detector_id: uuid.UUID
) -> Detector:
    found = await readable_detector(caller, repo, detector_id)
    require_manage(caller, found.client_id, "detector", detector_id)
    return found


class DetectorAdmin:
    """Create, update and delete detectors and links (the collector's side)."""

    def __init__(self, uow: UnitOfWorkFactory[DetectorsUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def create(self, caller: Principal, new: NewDetector) -> Detector:
        now = self._clock.now()
        detector = Detector(
            id=new_id(),
            create_time=now,
            update_time=now,
            client_id=new.client_id,
            display_name=new.display_name,
            position=new.position,
            radios=new.radios,
            range_m=new.range_m,
        )
        async with self._uow() as uow:
            client = await uow.clients.get(new.client_id)
            require_manage(caller, client.id, "client", new.client_id)
            await uow.detectors.add(detector)
            await uow.commit()
        return detector

    async def update(
        self, caller: Principal, detector_id: uuid.UUID, changes: dict[str, Any]
    ) -> Detector:
        async with self._uow() as uow:
            current = await manageable_detector(caller, uow.detectors, detector_id)
            if not changes:
                return current
            updated = current.with_changes(changes, self._clock.now())
            if dataclasses.replace(updated, update_time=current.update_time) == current:
                return current
            await uow.detectors.update(updated)
            await uow.commit()
            return updated

    async def delete(self, caller: Principal, detector_id: uuid.UUID) -> None:
        async with self._uow() as uow:
            await manageable_detector(caller, uow.detectors, detector_id)
            await uow.detectors.delete(detector_id)
            await uow.commit()

    async def create_link(
        self,
        caller: Principal,
        destination_id: uuid.UUID,
        source_id: uuid.UUID,
        max_seconds: int = 0,
    ) -> Link:
        now = self._clock.now()
        async with self._uow() as uow:
            dest = await manageable_detector(caller, uow.detectors, destination_id)
            src = await manageable_detector(caller, uow.detectors, source_id)
            if src.client_id != dest.client_id:
                raise InvalidArgument("source_detector_id", "belongs to another client")
            link = Link(
                destination_id=destination_id,
                source_id=source_id,
                client_id=dest.client_id,
                max_seconds=max_seconds or DEFAULT_MAX_SECONDS,
                create_time=now,
                update_time=now,
            )
            await uow.links.add(link)
            await uow.commit()
        return link

    async def update_link(
        self, caller: Principal, destination_id: uuid.UUID, source_id: uuid.UUID, max_seconds: int
    ) -> Link:
        async with self._uow() as uow:
            link = await self._link(caller, uow, destination_id, source_id)
            check_max_seconds(max_seconds)
            if link.max_seconds == max_seconds:
                return link
            link = dataclasses.replace(link, max_seconds=max_seconds, update_time=self._clock.now())
            await uow.links.update(link)
            await uow.commit()
            return link

    async def delete_link(
        self, caller: Principal, destination_id: uuid.UUID, source_id: uuid.UUID
    ) -> None:
        async with self._uow() as uow:
            await self._link(caller, uow, destination_id, source_id)
            await uow.links.delete(destination_id, source_id)
            await uow.commit()

    @staticmethod
    async def _link(
        caller: Principal, uow: DetectorsUnitOfWork, destination_id: uuid.UUID, source_id: uuid.UUID
    ) -> Link:
        await manageable_detector(caller, uow.detectors, destination_id)
        link = await uow.links.get(destination_id, source_id)
        if link is None:
            raise NotFound("link", f"{destination_id}/{source_id}")
        return link


class DetectorQueries:
    """Get and list detectors and links (the query server's side)."""

    def __init__(self, uow: UnitOfWorkFactory[DetectorsUnitOfWork]) -> None:
        self._uow = uow

    async def get(self, caller: Principal, detector_id: uuid.UUID) -> Detector:
        async with self._uow() as uow:
            return await readable_detector(caller, uow.detectors, detector_id)

    async def list(
        self, caller: Principal, client_id: uuid.UUID | None, page: PageRequest
    ) -> Page[Detector]:
        if client_id is not None and not caller.can_read(client_id):
            return Page([], None)  # as for a client without detectors
        filter = DetectorFilter(client_id=client_id, visible_clients=caller.readable_clients())
        async with self._uow() as uow:
            return await uow.detectors.list(filter, page)

    async def list_links(
        self, caller: Principal, destination_id: uuid.UUID | None, page: PageRequest
    ) -> Page[Link]:
        async with self._uow() as uow:
            if destination_id is not None:
                await readable_detector(caller, uow.detectors, destination_id)
            return await uow.links.list(destination_id, caller.readable_clients(), page)

    async def readable(
        self, caller: Principal, ids: Sequence[uuid.UUID]
    ) -> builtins.list[Detector]:
        """These detectors, all readable by the caller (else NOT_FOUND for the first not)."""
        async with self._uow() as uow:
            found = {d.id: d for d in await uow.detectors.get_many(list(ids))}
        for i in ids:
            d = found.get(i)
            if d is None or not caller.can_read(d.client_id):
                raise NotFound("detector", str(i))
        return [found[i] for i in ids]
