"""Key batches for manufacturing, allocation of tags to clients, and importing tags into
production runs as trackers. Private keys are sealed at birth and never leave sealed."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from domain.access import Principal, require_admin, require_manage
from domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from domain.keys import GeneratedKey, KeyBatch, check_private_key
from domain.limits import MAX_IMPORT
from domain.model import MacAddress, Tracker, new_id
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.keys import KeyPairFactory, KeysUnitOfWork, SecretSealer
from usecases.setup import name_clash

CHUNK = 2000

Progress = Callable[[int, int], None]
"""Called with (done, total) as a long operation advances."""


def _macs(texts: Sequence[str], field: str) -> list[str]:
    if not texts:
        raise InvalidArgument(field, "at least one MAC address is required")
    if len(texts) > MAX_IMPORT:
        raise InvalidArgument(field, f"at most {MAX_IMPORT} per call")
    out: list[str] = []
    seen: set[str] = set()
    for i, text in enumerate(texts):
        try:
            mac = MacAddress.parse(text).value
        except InvalidArgument as err:  # an element of a repeated field: named by index
            raise InvalidArgument(f"{field}[{i}]", err.violations[0].reason) from None
        if mac in seen:
            raise InvalidArgument(f"{field}[{i}]", f"{mac} given twice")
        seen.add(mac)
        out.append(mac)
    return out


class CreateKeyBatch:
    """Generate ``count`` key pairs (in a worker thread, chunk by chunk) and store them,
    sealed, in one transaction: a batch is complete or absent."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[KeysUnitOfWork],
        factory: KeyPairFactory,
        sealer: SecretSealer,
        clock: Clock,
    ) -> None:
        self._uow, self._factory, self._sealer, self._clock = uow, factory, sealer, clock

    def _generate(self, n: int) -> list[GeneratedKey]:
        out = []
        for _ in range(n):
            private, public = self._factory.generate()
            out.append(GeneratedKey(public, self._sealer.seal(private, public.hashed)))
        return out

    async def __call__(
        self, caller: Principal, count: int, label: str = "", progress: Progress | None = None
    ) -> KeyBatch:
        require_admin(caller, "generating keys")
        batch = KeyBatch(id=new_id(), label=label, size=count, create_time=self._clock.now())
        async with self._uow() as uow:
            await uow.tag_keys.add_batch_header(batch, self._sealer.active_kek_id)
            done = 0
            while done < count:
                n = min(CHUNK, count - done)
                keys = await asyncio.to_thread(self._generate, n)
                await uow.tag_keys.add_batch(batch, keys, first_seq=done)
                done += n
                if progress:
                    progress(done, count)
            await uow.commit()
        return batch


class ExportFormat:
    CSV = "csv"
    KEYS = "keys"


class ExportKeyBatch:
    """The public side of a batch, for the manufacturer, as a stream of text chunks:
    CSV (mac_address, advertisement_key, hashed_advertisement_key; base64) or one base64
    advertisement key per line (what OpenHaystack firmware tools take)."""

    def __init__(self, uow: UnitOfWorkFactory[KeysUnitOfWork], page: int = 5000) -> None:
        self._uow, self._page = uow, page

    async def __call__(
        self, caller: Principal, batch_id: uuid.UUID, fmt: str
    ) -> AsyncIterator[str]:
        require_admin(caller, "exporting keys")
        if fmt not in (ExportFormat.CSV, ExportFormat.KEYS):
            raise InvalidArgument("format", "must be csv or keys")
        async with self._uow() as uow:
            await uow.tag_keys.get_batch(batch_id)
        return self._stream(batch_id, fmt)

    async def _stream(self, batch_id: uuid.UUID, fmt: str) -> AsyncIterator[str]:
        if fmt == ExportFormat.CSV:
            yield "mac_address,advertisement_key,hashed_advertisement_key\n"
        after = -1
        while True:
            async with self._uow() as uow:
                rows = await uow.tag_keys.batch_keys(batch_id, after, self._page)
            if not rows:
                return
            lines = []
            for _, key in rows:
                adv = base64.b64encode(key.advertisement_key.value).decode()
                if fmt == ExportFormat.CSV:
                    hashed = base64.b64encode(key.hashed_advertisement_key).decode()
                    lines.append(f"{key.mac_address.value},{adv},{hashed}\n")
                else:
                    lines.append(adv + "\n")
            yield "".join(lines)
            after = rows[-1][0]


class AllocateTags:
    """Give tags (by MAC) to a client; a tag allocated to another client is refused."""

    def __init__(self, uow: UnitOfWorkFactory[KeysUnitOfWork]) -> None:
        self._uow = uow

    async def __call__(self, caller: Principal, client_id: uuid.UUID, macs: Sequence[str]) -> int:
        require_admin(caller, "allocating tags")
        wanted = _macs(macs, "mac_addresses")
        async with self._uow() as uow:
            await uow.clients.get(client_id)
            found = await uow.tag_keys.by_macs(wanted)
            for i, mac in enumerate(wanted):
                key = found.get(mac)
                if key is None:
                    raise NotFound("tag key", mac)
                if key.client_id not in (None, client_id):
                    raise FailedPrecondition(
                        f"tag {mac} is allocated to another client", subject=f"mac_addresses[{i}]"
                    )
            await uow.tag_keys.allocate([found[m].id for m in wanted], client_id)
            await uow.commit()
        return len(wanted)


class ImportTrackers:
    """Trackers into a production run, by MAC of tags allocated to the run's client. A tag
    that is not the client's is NotFound, exactly like one that does not exist."""

    def __init__(self, uow: UnitOfWorkFactory[KeysUnitOfWork], clock: Clock) -> None:
        self._uow, self._clock = uow, clock

    async def __call__(
        self, caller: Principal, run_id: uuid.UUID, macs: Sequence[str]
    ) -> list[Tracker]:
        wanted = _macs(macs, "mac_addresses")
        now = self._clock.now()
        async with self._uow() as uow:
            run = await uow.production_runs.get(run_id)
            require_manage(caller, run.client_id, run.KIND, run_id)
            found = await uow.tag_keys.by_macs(wanted)
            trackers = []
            for mac in wanted:
                key = found.get(mac)
                if key is None or key.client_id != run.client_id:
                    raise NotFound("tag key", mac)
                trackers.append(
                    Tracker.in_run(
                        run, key.advertisement_key, now, sealed_private_key=key.sealed_private_key
                    )
                )
            try:
                await uow.trackers.add_many(trackers)
            except AlreadyExists as err:
                raise name_clash(err, trackers, lambda i, f: f"mac_addresses[{i}]") from None
            await uow.commit()
        return trackers


class ImportExternalTrackers:
    """Trackers whose key pairs were made elsewhere: each private key is checked, its public
    key derived, and it is sealed on arrival; it is never stored or returned in the clear."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[KeysUnitOfWork],
        factory: KeyPairFactory,
        sealer: SecretSealer,
        clock: Clock,
    ) -> None:
        self._uow, self._factory, self._sealer, self._clock = uow, factory, sealer, clock

    async def __call__(
        self, caller: Principal, run_id: uuid.UUID, private_keys: Sequence[bytes]
    ) -> list[Tracker]:
        if not private_keys:
            raise InvalidArgument("private_keys", "at least one key is required")
        if len(private_keys) > MAX_IMPORT:
            raise InvalidArgument("private_keys", f"at most {MAX_IMPORT} per call")
        now = self._clock.now()
        async with self._uow() as uow:
            run = await uow.production_runs.get(run_id)
            require_manage(caller, run.client_id, run.KIND, run_id)
            trackers, seen = [], set()
            for i, private in enumerate(private_keys):
                try:
                    check_private_key(private)
                    public = self._factory.public_of(private)
                except InvalidArgument as err:
                    raise InvalidArgument(f"private_keys[{i}]", err.violations[0].reason) from None
                if public.value in seen:
                    raise InvalidArgument(f"private_keys[{i}]", "given twice")
                seen.add(public.value)
                trackers.append(
                    Tracker.in_run(
                        run,
                        public,
                        now,
                        sealed_private_key=self._sealer.seal(private, public.hashed),
                    )
                )
            try:
                await uow.trackers.add_many(trackers)
            except AlreadyExists as err:
                raise name_clash(err, trackers, lambda i, f: f"private_keys[{i}]") from None
            await uow.commit()
        return trackers


@dataclass(frozen=True, slots=True)
class KeyUseCases:
    create_key_batch: CreateKeyBatch
    export_key_batch: ExportKeyBatch
    allocate_tags: AllocateTags
    import_trackers: ImportTrackers
    import_external_trackers: ImportExternalTrackers
