"""Ports of the keys capability: key pairs, sealing private keys, key batches."""

from __future__ import annotations

import uuid
from typing import Protocol

from domain.keys import GeneratedKey, KeyBatch, SealedSecret, TagKey
from domain.model import (
    AdvertisementKey,
)
from domain.ports.common import Transaction
from domain.ports.setup import ClientRepository, ProductionRunRepository, TrackerRepository


class KeyPairFactory(Protocol):
    """Makes P-224 key pairs the way Find My tags use them (the keys adapter wraps findmy)."""

    def generate(self) -> tuple[bytes, AdvertisementKey]:
        """A new (private key, advertisement key) pair."""
        ...

    def public_of(self, private_key: bytes) -> AdvertisementKey:
        """The advertisement key of a private key; InvalidArgument if it is not one."""
        ...


class SecretSealer(Protocol):
    """Authenticated encryption under a key-encryption key (KEK) with an id, for rotation.
    ``context`` is bound into the ciphertext (a sealed value cannot be moved to another row)."""

    active_kek_id: str

    def seal(self, plaintext: bytes, context: bytes) -> SealedSecret: ...

    def unseal(self, sealed: SealedSecret, context: bytes) -> bytes: ...


class TagKeyRepository(Protocol):
    async def add_batch(self, batch: KeyBatch, keys: list[GeneratedKey], first_seq: int) -> None:
        """Store keys of a batch (in chunks; ``first_seq`` numbers them within the batch).
        AlreadyExists on a clashing key or MAC."""
        ...

    async def add_batch_header(self, batch: KeyBatch, kek_id: str) -> None: ...

    async def get_batch(self, batch_id: uuid.UUID) -> KeyBatch: ...

    async def batch_keys(
        self, batch_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[tuple[int, TagKey]]:
        """Keys of a batch in order, after sequence number ``after_seq``."""
        ...

    async def by_macs(self, macs: list[str]) -> dict[str, TagKey]: ...

    async def allocate(self, key_ids: list[uuid.UUID], client_id: uuid.UUID | None) -> None: ...


class KeysUnitOfWork(Transaction, Protocol):
    """A transaction over key batches and the trackers made from them."""

    clients: ClientRepository
    production_runs: ProductionRunRepository
    trackers: TrackerRepository
    tag_keys: TagKeyRepository
