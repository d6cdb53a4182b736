"""Setup entities and value objects: clients, brands, production runs, locations, trackers.

Every value validates itself at construction, so an invalid one cannot exist. Field names in
errors are the public field names, so adapters only add the resource prefix.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Self

from domain.errors import FieldViolation, InvalidArgument
from domain.instants import check_run_time

MAX_NAME_LENGTH = 200
MAX_RADIUS_M = 100_000.0
ADVERTISEMENT_KEY_LENGTH = 28


def parse_id(value: str, field_name: str = "id") -> uuid.UUID:
    """Parse a resource id (a UUID in canonical text form)."""
    if not value:
        raise InvalidArgument(field_name, "required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field_name, f"not a valid id: {value[:64]!r}") from None


def new_id() -> uuid.UUID:
    return uuid.uuid4()


def _check_name(value: str, field_name: str, *, required: bool) -> None:
    if required and not value.strip():
        raise InvalidArgument(field_name, "required")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidArgument(field_name, f"longer than {MAX_NAME_LENGTH} characters")
    if "\x00" in value:
        raise InvalidArgument(field_name, "must not contain NUL characters")


@dataclass(frozen=True, slots=True)
class GeoPoint:
    """A WGS84 position in decimal degrees."""

    latitude: float
    longitude: float

    def __post_init__(self) -> None:
        violations = []
        if not (math.isfinite(self.latitude) and -90.0 <= self.latitude <= 90.0):
            violations.append(FieldViolation("latitude", "must be within [-90, 90]"))
        if not (math.isfinite(self.longitude) and -180.0 <= self.longitude <= 180.0):
            violations.append(FieldViolation("longitude", "must be within [-180, 180]"))
        if violations:
            raise InvalidArgument.of(violations)


_MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-]?)(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$")


@dataclass(frozen=True, slots=True)
class MacAddress:
    """A BLE address in canonical form ``AA:BB:CC:DD:EE:FF``."""

    value: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(?:[0-9A-F]{2}:){5}[0-9A-F]{2}", self.value):
            raise InvalidArgument("mac_address", f"not a MAC address: {self.value[:64]!r}")

    @classmethod
    def parse(cls, text: str) -> MacAddress:
        """Accept ``aa:bb:..``, ``AA-BB-..`` or ``aabbcc..``; reject anything else."""
        text = text.strip()
        if not _MAC_RE.match(text):
            raise InvalidArgument(
                "mac_address", f"not a MAC address (want AA:BB:CC:DD:EE:FF): {text[:64]!r}"
            )
        digits = re.sub(r"[:-]", "", text).upper()
        return cls(":".join(digits[i : i + 2] for i in range(0, 12, 2)))

    @classmethod
    def for_advertisement_key(cls, key: AdvertisementKey) -> MacAddress:
        """The address a Find My tag advertises with: the key's first 6 bytes, top bits set."""
        raw = bytes([key.value[0] | 0b1100_0000]) + key.value[1:6]
        return cls(":".join(f"{b:02X}" for b in raw))


@dataclass(frozen=True, slots=True)
class AdvertisementKey:
    """The 28-byte public key a tag broadcasts (x coordinate of a P-224 point)."""

    value: bytes

    def __post_init__(self) -> None:
        if len(self.value) != ADVERTISEMENT_KEY_LENGTH:
            raise InvalidArgument(
                "advertisement_key",
                f"must be {ADVERTISEMENT_KEY_LENGTH} bytes, got {len(self.value)}",
            )

    @property
    def hashed(self) -> bytes:
        """SHA-256 of the key: what Find My is asked for."""
        return hashlib.sha256(self.value).digest()


@dataclass(frozen=True, slots=True)
class SealedSecret:
    """A secret encrypted under the key-encryption key ``kek_id``; opaque to the domain."""

    kek_id: str
    ciphertext: bytes = field(repr=False)


class LocationKind(enum.Enum):
    DELIVERY = "DELIVERY"
    STORAGE = "STORAGE"


@dataclass(frozen=True, slots=True, kw_only=True)
class Entity:
    """Common shape of setup resources: an id, creation and update times."""

    UPDATABLE: ClassVar[frozenset[str]] = frozenset()
    KIND: ClassVar[str] = "resource"

    id: uuid.UUID
    create_time: datetime
    update_time: datetime

    @property
    def owner_client_id(self) -> uuid.UUID:
        """The client whose resource this is (for access checks)."""
        return self.client_id  # type: ignore[attr-defined, no-any-return]

    def with_changes(self, changes: dict[str, Any], now: datetime) -> Self:
        """A copy with ``changes`` applied (only updatable fields), validated anew."""
        for name in changes:
            if name not in self.UPDATABLE:
                raise InvalidArgument("update_mask", f"field {name!r} cannot be updated")
        return dataclasses.replace(self, **changes, update_time=now)


@dataclass(frozen=True, slots=True, kw_only=True)
class Client(Entity):
    UPDATABLE: ClassVar[frozenset[str]] = frozenset({"display_name"})
    KIND: ClassVar[str] = "client"

    display_name: str

    def __post_init__(self) -> None:
        _check_name(self.display_name, "display_name", required=True)

    @property
    def owner_client_id(self) -> uuid.UUID:
        return self.id


@dataclass(frozen=True, slots=True, kw_only=True)
class Brand(Entity):
    UPDATABLE: ClassVar[frozenset[str]] = frozenset({"display_name"})
    KIND: ClassVar[str] = "brand"

    client_id: uuid.UUID
    display_name: str

    def __post_init__(self) -> None:
        _check_name(self.display_name, "display_name", required=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProductionRun(Entity):
    """Trackers of a run are fetched while ``start_time <= now < end_time``; both within
    the run bounds of ``domain.instants`` (years 2000..2100)."""

    UPDATABLE: ClassVar[frozenset[str]] = frozenset({"display_name", "start_time", "end_time"})
    KIND: ClassVar[str] = "production run"

    brand_id: uuid.UUID
    client_id: uuid.UUID
    display_name: str
    start_time: datetime
    end_time: datetime

    def __post_init__(self) -> None:
        _check_name(self.display_name, "display_name", required=True)
        problems: list[FieldViolation] = []
        for name in ("start_time", "end_time"):
            try:
                check_run_time(getattr(self, name), name)
            except InvalidArgument as err:
                problems += err.violations
        if problems:
            raise InvalidArgument.of(problems)
        if self.end_time <= self.start_time:
            raise InvalidArgument("end_time", "must be after start_time")

    def is_active(self, now: datetime) -> bool:
        return self.start_time <= now < self.end_time


@dataclass(frozen=True, slots=True, kw_only=True)
class Location(Entity):
    """A delivery or storage place of one production run, with a geodesic geofence."""

    UPDATABLE: ClassVar[frozenset[str]] = frozenset({"kind", "display_name", "center", "radius_m"})
    KIND: ClassVar[str] = "location"

    production_run_id: uuid.UUID
    client_id: uuid.UUID
    kind: LocationKind
    display_name: str
    center: GeoPoint
    radius_m: float

    def __post_init__(self) -> None:
        _check_name(self.display_name, "display_name", required=True)
        if not (math.isfinite(self.radius_m) and 0.0 < self.radius_m <= MAX_RADIUS_M):
            raise InvalidArgument("radius_m", f"must be > 0 and <= {MAX_RADIUS_M:g} metres")


@dataclass(frozen=True, slots=True, kw_only=True)
class Tracker(Entity):
    """A tag; its MAC address is derived from its advertisement key."""

    UPDATABLE: ClassVar[frozenset[str]] = frozenset({"display_name", "production_run_id"})
    KIND: ClassVar[str] = "tracker"

    client_id: uuid.UUID
    production_run_id: uuid.UUID
    advertisement_key: AdvertisementKey
    mac_address: MacAddress = field(init=False)
    display_name: str = ""
    # Set when the tracker came with its private key (from a key batch or imported).
    sealed_private_key: SealedSecret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_name(self.display_name, "display_name", required=False)
        object.__setattr__(
            self, "mac_address", MacAddress.for_advertisement_key(self.advertisement_key)
        )

    @property
    def hashed_advertisement_key(self) -> bytes:
        return self.advertisement_key.hashed

    @classmethod
    def in_run(
        cls,
        run: ProductionRun,
        advertisement_key: AdvertisementKey,
        now: datetime,
        *,
        display_name: str = "",
        sealed_private_key: SealedSecret | None = None,
    ) -> Tracker:
        """A new tracker of ``run``: its client is always the run's client."""
        return cls(
            id=new_id(),
            create_time=now,
            update_time=now,
            client_id=run.client_id,
            production_run_id=run.id,
            advertisement_key=advertisement_key,
            display_name=display_name,
            sealed_private_key=sealed_private_key,
        )


def check_mac_matches(mac_text: str, key: AdvertisementKey) -> None:
    """A MAC given alongside a key must be the one the key implies."""
    if not mac_text:
        return
    mac = MacAddress.parse(mac_text)
    expected = MacAddress.for_advertisement_key(key)
    if mac != expected:
        raise InvalidArgument(
            "mac_address", f"{mac.value} does not match the advertisement key ({expected.value})"
        )


__all__ = [
    "AdvertisementKey",
    "Brand",
    "Client",
    "Entity",
    "GeoPoint",
    "Location",
    "LocationKind",
    "MacAddress",
    "ProductionRun",
    "Tracker",
    "check_mac_matches",
    "new_id",
    "parse_id",
]
