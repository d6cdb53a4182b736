"""Fakes of the keys ports (``domain.ports.keys``): key batches, and deterministic
stand-ins for findmy's key pairs and AES-GCM sealing with the same contracts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import threading
import uuid
from typing import TYPE_CHECKING, ClassVar

from domain.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
)
from domain.keys import PRIVATE_KEY_LENGTH, GeneratedKey, KeyBatch, TagKey
from domain.model import (
    AdvertisementKey,
    SealedSecret,
)
from tests.unit.fakes.base import (
    StoredKeyBatch,
    StoredTagKey,
    _missing_parent,
)

if TYPE_CHECKING:
    from tests.unit.fakes.common import FakeUnitOfWork


class FakeTagKeyRepository:
    """Key batches and tag keys (adapter: ``key_batches`` + ``tag_keys``)."""

    kind: ClassVar[str] = "tag key"

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _batches(self) -> dict[uuid.UUID, StoredKeyBatch]:
        return self._uow.tables.key_batches

    @property
    def _keys(self) -> dict[uuid.UUID, StoredTagKey]:
        return self._uow.tables.tag_keys

    async def add_batch_header(self, batch: KeyBatch, kek_id: str) -> None:
        if batch.id in self._batches:
            raise AlreadyExists("key batch", "id", str(batch.id))
        self._batches[batch.id] = StoredKeyBatch(batch, kek_id)

    async def add_batch(self, batch: KeyBatch, keys: list[GeneratedKey], first_seq: int) -> None:
        """One COPY: all rows or none; unique indexes checked in order (MAC, key, seq)."""
        if batch.id not in self._batches:
            raise _missing_parent(self.kind, "batch_id", batch.id, "key_batches")
        rows = self._keys.values()
        macs = {r.key.mac_address.value for r in rows}
        advs = {r.key.advertisement_key.value for r in rows}
        seqs = {(r.key.batch_id, r.seq) for r in rows}
        staged: list[StoredTagKey] = []
        for i, generated in enumerate(keys):
            seq = first_seq + i
            mac, adv = generated.mac_address.value, generated.advertisement_key.value
            if mac in macs:
                raise AlreadyExists(self.kind, "mac_address", mac)
            if adv in advs:
                raise AlreadyExists(self.kind, "advertisement_key", adv.hex())
            if (batch.id, seq) in seqs:
                raise AlreadyExists(self.kind, "seq", str(seq))
            macs.add(mac)
            advs.add(adv)
            seqs.add((batch.id, seq))
            key = TagKey(
                id=uuid.uuid4(),
                batch_id=batch.id,
                advertisement_key=generated.advertisement_key,
                sealed_private_key=generated.sealed_private_key,
            )
            staged.append(StoredTagKey(seq, key))
        self._keys.update({row.key.id: row for row in staged})

    async def get_batch(self, batch_id: uuid.UUID) -> KeyBatch:
        try:
            return self._batches[batch_id].batch
        except KeyError:
            raise NotFound("key batch", str(batch_id)) from None

    async def batch_keys(
        self, batch_id: uuid.UUID, after_seq: int, limit: int
    ) -> list[tuple[int, TagKey]]:
        rows = sorted(
            (r for r in self._keys.values() if r.key.batch_id == batch_id and r.seq > after_seq),
            key=lambda r: r.seq,
        )
        return [(r.seq, r.key) for r in rows[:limit]]

    async def by_macs(self, macs: list[str]) -> dict[str, TagKey]:
        """The keys found, by MAC; unknown MACs are simply absent."""
        wanted = set(macs)
        return {
            r.key.mac_address.value: r.key
            for r in self._keys.values()
            if r.key.mac_address.value in wanted
        }

    async def allocate(self, key_ids: list[uuid.UUID], client_id: uuid.UUID | None) -> None:
        """Like ``UPDATE ... WHERE id = ANY(..)``: unknown ids change nothing."""
        if client_id is not None and client_id not in self._uow.tables.clients:
            raise _missing_parent(self.kind, "client_id", client_id, "clients")
        for key_id in key_ids:
            row = self._keys.get(key_id)
            if row is not None:
                key = dataclasses.replace(row.key, client_id=client_id)
                self._keys[key_id] = StoredTagKey(row.seq, key)


class FakeKeyPairFactory:
    """Deterministic key pairs: the n-th private key is ``sha256(n)[:28]``, its advertisement
    key ``sha256(b"pub" + private)[:28]``. All-zero and all-0xff private keys are rejected, as
    findmy rejects scalars outside the curve order. Safe to call from worker threads."""

    def __init__(self, start: int = 0) -> None:
        self._next = start
        self._lock = threading.Lock()
        self.generated: list[tuple[bytes, AdvertisementKey]] = []
        self.threads: set[int] = set()

    @staticmethod
    def private_key(n: int) -> bytes:
        return hashlib.sha256(n.to_bytes(8, "big")).digest()[:PRIVATE_KEY_LENGTH]

    @staticmethod
    def derive(private_key: bytes) -> AdvertisementKey:
        return AdvertisementKey(hashlib.sha256(b"pub" + private_key).digest()[:28])

    def generate(self) -> tuple[bytes, AdvertisementKey]:
        with self._lock:
            n, self._next = self._next, self._next + 1
            self.threads.add(threading.get_ident())
            pair = (self.private_key(n), self.derive(self.private_key(n)))
            self.generated.append(pair)
        return pair

    def public_of(self, private_key: bytes) -> AdvertisementKey:
        if len(private_key) != PRIVATE_KEY_LENGTH or private_key in (
            bytes(PRIVATE_KEY_LENGTH),
            b"\xff" * PRIVATE_KEY_LENGTH,
        ):
            raise InvalidArgument("private_key", "not a valid P-224 private key")
        return self.derive(private_key)


class FakeSealer:
    """``tag(16) || plaintext XOR keystream``; keystream and tag depend on the key, the KEK id
    and the context, so the ciphertext never shows the plaintext and opens only with the same
    context (ValueError otherwise, like AesGcmSealer). Counts its seals."""

    active_kek_id: str

    def __init__(self, key: bytes = b"fake-kek", kek_id: str = "fake") -> None:
        self._key = key
        self.active_kek_id = kek_id
        self._lock = threading.Lock()
        self.seals = 0

    def _stream(self, kek_id: str, context: bytes, n: int) -> bytes:
        seed = self._key + kek_id.encode() + b"\x00" + context
        blocks = (hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(n // 32 + 1))
        return b"".join(blocks)[:n]

    def _tag(self, kek_id: str, context: bytes, plaintext: bytes) -> bytes:
        msg = kek_id.encode() + b"\x00" + hashlib.sha256(context).digest() + plaintext
        return hmac.new(self._key, msg, hashlib.sha256).digest()[:16]

    def seal(self, plaintext: bytes, context: bytes) -> SealedSecret:
        with self._lock:
            self.seals += 1
        kek = self.active_kek_id
        stream = self._stream(kek, context, len(plaintext))
        body = bytes(a ^ b for a, b in zip(plaintext, stream, strict=True))
        return SealedSecret(kek, self._tag(kek, context, plaintext) + body)

    def unseal(self, sealed: SealedSecret, context: bytes) -> bytes:
        if sealed.kek_id != self.active_kek_id:
            raise ValueError(f"KEK {sealed.kek_id!r} is not known")
        tag, body = sealed.ciphertext[:16], sealed.ciphertext[16:]
        stream = self._stream(sealed.kek_id, context, len(body))
        plaintext = bytes(a ^ b for a, b in zip(body, stream, strict=True))
        if not hmac.compare_digest(tag, self._tag(sealed.kek_id, context, plaintext)):
            raise ValueError("sealed secret does not open with its KEK and context")
        return plaintext
