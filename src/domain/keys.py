"""Tag keys: P-224 key pairs made before manufacturing, allocated to clients by MAC address,
then imported into production runs as trackers. Private keys exist here only sealed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from domain.errors import InvalidArgument
from domain.limits import MAX_BATCH_KEYS
from domain.model import AdvertisementKey, MacAddress, SealedSecret

__all__ = ["GeneratedKey", "KeyBatch", "SealedSecret", "TagKey", "check_private_key"]

PRIVATE_KEY_LENGTH = 28


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A fresh key pair's public key with its private key already sealed."""

    advertisement_key: AdvertisementKey
    sealed_private_key: SealedSecret

    @property
    def mac_address(self) -> MacAddress:
        return MacAddress.for_advertisement_key(self.advertisement_key)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyBatch:
    id: uuid.UUID
    label: str
    size: int
    create_time: datetime

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_BATCH_KEYS:
            raise InvalidArgument("count", f"must be within 1..{MAX_BATCH_KEYS}")
        if len(self.label) > 200 or "\x00" in self.label:
            raise InvalidArgument("label", "at most 200 characters, no NUL")


@dataclass(frozen=True, slots=True, kw_only=True)
class TagKey:
    """One tag's key: public side in the clear, private side sealed; maybe allocated."""

    id: uuid.UUID
    batch_id: uuid.UUID | None
    advertisement_key: AdvertisementKey
    sealed_private_key: SealedSecret
    client_id: uuid.UUID | None = None

    @property
    def mac_address(self) -> MacAddress:
        return MacAddress.for_advertisement_key(self.advertisement_key)

    @property
    def hashed_advertisement_key(self) -> bytes:
        return self.advertisement_key.hashed


def check_private_key(value: bytes) -> None:
    if len(value) != PRIVATE_KEY_LENGTH:
        raise InvalidArgument("private_key", f"must be {PRIVATE_KEY_LENGTH} bytes")
