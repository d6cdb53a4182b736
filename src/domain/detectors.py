"""Detectors, links and sightings (seed 003): fixed Bluetooth/Wi-Fi detectors of a client
that hear passing devices, links destination <- source with the longest travel time taken
into account, and the privacy rule for device ids.

Device ids are keyed on arrival: ``device_key(secret, kind, raw)`` is HMAC-SHA256 under a
server secret, truncated to 16 bytes. A plain hash of a MAC address is no protection (2^48
candidates, fewer with known vendor prefixes, are hashed in hours); without the secret the
keyed value reveals nothing. Raw MACs and opaque ids are domain-separated (``kind``), so an
opaque id can never collide with a MAC by construction.
"""

from __future__ import annotations

import enum
import hashlib
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from domain.errors import InvalidArgument
from domain.model import MAX_NAME_LENGTH, Entity, GeoPoint

DEFAULT_MAX_SECONDS = 600
"""A link's max_seconds when none is given (the seed's example)."""
MAX_LINK_SECONDS = 86_400
MAX_RANGE_M = 10_000.0
UNKNOWN_RANGE_ACCURACY_M = 100
"""Accuracy of a tracker report made from a detector whose range is unknown."""
DEVICE_KEY_BYTES = 16
MAC_BYTES = 6
MAX_OPAQUE_ID_BYTES = 64
MIN_RSSI_DBM, MAX_RSSI_DBM = -127, 20
MAX_BATTERY_VOLTAGE = 100.0
MIN_KEY_SECRET_BYTES = 32
MAX_KEY_ID = 32767


class Radio(enum.IntEnum):
    BLUETOOTH = 1
    WIFI = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Detector(Entity):
    """A fixed detector of one client."""

    UPDATABLE: ClassVar[frozenset[str]] = frozenset(
        {"display_name", "position", "radios", "range_m"}
    )
    KIND: ClassVar[str] = "detector"

    client_id: uuid.UUID
    display_name: str
    position: GeoPoint
    radios: tuple[Radio, ...]
    range_m: float = 0.0

    def __post_init__(self) -> None:
        if not self.display_name.strip():
            raise InvalidArgument("display_name", "required")
        if len(self.display_name) > MAX_NAME_LENGTH:
            raise InvalidArgument("display_name", f"longer than {MAX_NAME_LENGTH} characters")
        if "\x00" in self.display_name:
            raise InvalidArgument("display_name", "must not contain NUL characters")
        if not self.radios:
            raise InvalidArgument("radios", "at least one radio required")
        if len(set(self.radios)) != len(self.radios):
            raise InvalidArgument("radios", "each radio at most once")
        if not (math.isfinite(self.range_m) and 0.0 <= self.range_m <= MAX_RANGE_M):
            raise InvalidArgument("range_m", f"must be within [0, {MAX_RANGE_M:g}] metres")

    @property
    def report_accuracy_m(self) -> int:
        """The accuracy of a report of one of our trackers this detector heard."""
        return math.ceil(self.range_m) if self.range_m > 0 else UNKNOWN_RANGE_ACCURACY_M


@dataclass(frozen=True, slots=True, kw_only=True)
class Link:
    """Traffic from ``source_id`` to ``destination_id`` (both of ``client_id``)."""

    UPDATABLE: ClassVar[frozenset[str]] = frozenset({"max_seconds"})

    destination_id: uuid.UUID
    source_id: uuid.UUID
    client_id: uuid.UUID
    max_seconds: int
    create_time: datetime
    update_time: datetime

    def __post_init__(self) -> None:
        check_max_seconds(self.max_seconds)
        if self.destination_id == self.source_id:
            raise InvalidArgument("source_detector_id", "must differ from the destination")


def check_max_seconds(value: int) -> None:
    if not 1 <= value <= MAX_LINK_SECONDS:
        raise InvalidArgument("max_seconds", f"must be within 1..{MAX_LINK_SECONDS}")


# -- keyed device ids ---------------------------------------------------------------------


class DeviceIdKind(enum.Enum):
    MAC = b"mac\x00"
    OPAQUE = b"opaque\x00"


class DeviceKeyRing:
    """The server's device-id keys by id; ``active`` keys new sightings. Rotation: add a key
    and make it active; rows keep the id of the key that made them (a device keyed under two
    keys is two devices: passes are matched only within one key).

    HMAC-SHA256 exactly as RFC 2104 (a test checks it against ``hmac``), with the inner and
    outer hash states of each key computed once: three times faster per sighting than
    ``hmac.new`` or ``hmac.digest``, which redo the key schedule on every call."""

    __slots__ = ("_states", "active", "keys")

    def __init__(self, keys: Mapping[int, bytes], active: int) -> None:
        if active not in keys:
            raise ValueError(f"active device key {active} is not among the keys")
        for key_id, secret in keys.items():
            if not 1 <= key_id <= MAX_KEY_ID:
                raise ValueError(f"device key id {key_id}: 1..{MAX_KEY_ID}")
            if len(secret) < MIN_KEY_SECRET_BYTES:
                raise ValueError(f"device key {key_id}: at least {MIN_KEY_SECRET_BYTES} bytes")
        self.keys: Mapping[int, bytes] = dict(keys)
        self.active = active
        self._states = {k: _hmac_states(secret) for k, secret in self.keys.items()}

    def key(self, kind: DeviceIdKind, raw: bytes, key_id: int | None = None) -> bytes:
        """The keyed id of a device under key ``key_id`` (default: the active key)."""
        inner, outer = self._states[self.active if key_id is None else key_id]
        i = inner.copy()
        i.update(kind.value + raw)
        o = outer.copy()
        o.update(i.digest())
        digest: bytes = o.digest()
        return digest[:DEVICE_KEY_BYTES]


def _hmac_states(secret: bytes) -> tuple[Any, Any]:
    """SHA-256 states after the inner and outer padded key (RFC 2104, block size 64)."""
    if len(secret) > 64:
        secret = hashlib.sha256(secret).digest()
    padded = secret.ljust(64, b"\0")
    return (
        hashlib.sha256(bytes(b ^ 0x36 for b in padded)),
        hashlib.sha256(bytes(b ^ 0x5C for b in padded)),
    )


def mac_bytes(text: str) -> bytes:
    """``AA:BB:CC:DD:EE:FF`` as its 6 bytes."""
    return bytes.fromhex(text.replace(":", "").replace("-", ""))


# -- sightings and statuses as they arrive -----------------------------------------------


@dataclass(frozen=True, slots=True)
class DetectorStatusReading:
    detector_id: uuid.UUID
    report_time: datetime
    battery_voltage: float
    bluetooth_count: int
    wifi_count: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.battery_voltage) and 0 <= self.battery_voltage <= 100):
            raise InvalidArgument("battery_voltage", "must be within [0, 100] volts")
        if self.bluetooth_count < 0:
            raise InvalidArgument("bluetooth_count", "must not be negative")
        if self.wifi_count < 0:
            raise InvalidArgument("wifi_count", "must not be negative")


@dataclass(frozen=True, slots=True)
class DetectorEvent:
    """A stored sighting."""

    detector_id: uuid.UUID
    device_key: bytes
    key_id: int
    seen_time: datetime
    rssi_dbm: int | None
    radio: Radio


def sighting_problem(
    times_us: int | None,
    mac: bytes,
    opaque: bytes,
    rssi: int | None,
    radio: int,
    earliest_us: int,
    latest_us: int,
) -> tuple[str, str] | None:
    """Why one sighting is refused (field, reason), or None. Plain values: the bulk path."""
    if times_us is None:
        return "seen_time", "required"
    if not earliest_us <= times_us <= latest_us:
        return "seen_time", "outside [2019-01-01, now + clock skew]"
    if mac and opaque:
        return "opaque_id", "give mac_address or opaque_id, not both"
    if mac:
        if len(mac) != MAC_BYTES:
            return "mac_address", f"must be {MAC_BYTES} bytes, got {len(mac)}"
    elif not opaque:
        return "mac_address", "mac_address or opaque_id required"
    elif len(opaque) > MAX_OPAQUE_ID_BYTES:
        return "opaque_id", f"at most {MAX_OPAQUE_ID_BYTES} bytes"
    if rssi is not None and not MIN_RSSI_DBM <= rssi <= MAX_RSSI_DBM:
        return "rssi_dbm", f"must be within {MIN_RSSI_DBM}..{MAX_RSSI_DBM} dBm"
    if radio not in (0, Radio.BLUETOOTH, Radio.WIFI):
        return "radio", "must be RADIO_BLUETOOTH or RADIO_WIFI"
    return None
