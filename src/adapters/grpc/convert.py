"""Protobuf <-> domain for the setup resources. Field errors carry wire field paths."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import field_mask_pb2, timestamp_pb2
from google.protobuf.message import Message

from domain.errors import InvalidArgument, field_prefix
from domain.model import (
    Brand,
    Client,
    Entity,
    GeoPoint,
    Location,
    LocationKind,
    ProductionRun,
    Tracker,
)
from domain.model import parse_id as _parse_id
from tracker.v1 import resources_pb2 as pb

_KIND_TO_PB = {
    LocationKind.DELIVERY: pb.LOCATION_KIND_DELIVERY,
    LocationKind.STORAGE: pb.LOCATION_KIND_STORAGE,
}
_KIND_FROM_PB = {v: k for k, v in _KIND_TO_PB.items()}


def parse_id(value: str, field: str = "id") -> uuid.UUID:
    return _parse_id(value, field)


def optional_id(value: str, field: str) -> uuid.UUID | None:
    return _parse_id(value, field) if value else None


def ts(value: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(value)
    return out


def from_ts(msg: Message, field: str) -> datetime:
    if not msg.HasField(field):
        raise InvalidArgument(field, "required")
    value: timestamp_pb2.Timestamp = getattr(msg, field)
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(
            field,
            "not a valid Timestamp (seconds within 0001-01-01..9999-12-31, nanos 0..999999999)",
        ) from None


def location_kind(value: int, field: str = "kind") -> LocationKind:
    try:
        return _KIND_FROM_PB[value]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(
            field, "must be LOCATION_KIND_DELIVERY or LOCATION_KIND_STORAGE"
        ) from None


def geo_point(msg: Message, field: str = "center") -> GeoPoint:
    if not msg.HasField(field):
        raise InvalidArgument(field, "required")
    p: pb.GeoPoint = getattr(msg, field)
    with field_prefix(field):
        return GeoPoint(latitude=p.latitude, longitude=p.longitude)


def radius(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise InvalidArgument("radius_m", "must be > 0 metres")
    return value


# -- domain -> protobuf ---------------------------------------------------------------------


def client_pb(c: Client) -> pb.Client:
    return pb.Client(
        id=str(c.id),
        display_name=c.display_name,
        create_time=ts(c.create_time),
        update_time=ts(c.update_time),
    )


def brand_pb(b: Brand) -> pb.Brand:
    return pb.Brand(
        id=str(b.id),
        client_id=str(b.client_id),
        display_name=b.display_name,
        create_time=ts(b.create_time),
        update_time=ts(b.update_time),
    )


def production_run_pb(r: ProductionRun) -> pb.ProductionRun:
    return pb.ProductionRun(
        id=str(r.id),
        brand_id=str(r.brand_id),
        client_id=str(r.client_id),
        display_name=r.display_name,
        start_time=ts(r.start_time),
        end_time=ts(r.end_time),
        create_time=ts(r.create_time),
        update_time=ts(r.update_time),
    )


def location_pb(loc: Location) -> pb.Location:
    return pb.Location(
        id=str(loc.id),
        production_run_id=str(loc.production_run_id),
        kind=_KIND_TO_PB[loc.kind],
        display_name=loc.display_name,
        center=pb.GeoPoint(latitude=loc.center.latitude, longitude=loc.center.longitude),
        radius_m=loc.radius_m,
        create_time=ts(loc.create_time),
        update_time=ts(loc.update_time),
    )


def tracker_pb(t: Tracker) -> pb.Tracker:
    return pb.Tracker(
        id=str(t.id),
        client_id=str(t.client_id),
        production_run_id=str(t.production_run_id),
        mac_address=t.mac_address.value,
        advertisement_key=t.advertisement_key.value,
        hashed_advertisement_key=t.hashed_advertisement_key,
        display_name=t.display_name,
        create_time=ts(t.create_time),
        update_time=ts(t.update_time),
    )


# -- update masks ---------------------------------------------------------------------------

Reader = Callable[[Any], Any]
"""Reads one updatable field from the resource message as a domain value."""

# How to read each updatable field from a resource message. Which fields of a resource may
# be updated is the domain's decision: its entity's ``UPDATABLE`` (the one list).
FIELD_READERS: Mapping[str, Reader] = {
    "display_name": lambda m: m.display_name,
    "start_time": lambda m: from_ts(m, "start_time"),
    "end_time": lambda m: from_ts(m, "end_time"),
    "kind": lambda m: location_kind(m.kind),
    "center": lambda m: geo_point(m, "center"),
    "radius_m": lambda m: radius(m.radius_m),
    "production_run_id": lambda m: parse_id(m.production_run_id, "production_run_id"),
}

ENTITIES: Mapping[str, type[Entity]] = {
    "client": Client,
    "brand": Brand,
    "production_run": ProductionRun,
    "location": Location,
    "tracker": Tracker,
}


def updatable_fields(resource: str, msg: Message) -> list[str]:
    """The resource's updatable fields, in the message's field order."""
    updatable = ENTITIES[resource].UPDATABLE
    return [f.name for f in msg.DESCRIPTOR.fields if f.name in updatable]


def _is_set(msg: Message, name: str) -> bool:
    field = msg.DESCRIPTOR.fields_by_name[name]
    if field.message_type is not None:
        return msg.HasField(name)
    return bool(getattr(msg, name))


def changes_from(resource: str, msg: Message, mask: field_mask_pb2.FieldMask) -> dict[str, Any]:
    """The domain changes an Update request asks for (AIP-134).

    With a mask, exactly its paths (each must be updatable); without one, every updatable
    field that is set to a non-default value.
    """
    readers = {name: FIELD_READERS[name] for name in updatable_fields(resource, msg)}
    if mask.paths:
        unknown = [p for p in mask.paths if p not in readers]
        if unknown:
            raise InvalidArgument(
                "update_mask",
                f"cannot update {', '.join(unknown)}; updatable: {', '.join(sorted(readers))}",
            )
        paths = list(dict.fromkeys(mask.paths))
    else:
        paths = [name for name in readers if _is_set(msg, name)]
    changes = {}
    with field_prefix(resource):
        for name in paths:
            changes[name] = readers[name](msg)
    return changes
