"""Key use cases against the in-memory fakes: key batches, their export, allocating tags to
clients, and importing tags (or externally made keys) into production runs as trackers.

Private keys must only ever be stored sealed, with the hashed advertisement key as context.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.access import Principal, Role
from domain.errors import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from domain.keys import MAX_BATCH_KEYS, KeyBatch, TagKey
from domain.limits import MAX_IMPORT
from domain.model import AdvertisementKey, Client, MacAddress, ProductionRun, Tracker
from servers.parts import key_usecases, setup_usecases
from tests.unit.fakes.base import FakeClock, FakeTables
from tests.unit.fakes.common import FakeUnitOfWorkFactory
from tests.unit.fakes.keys import FakeKeyPairFactory, FakeSealer
from usecases import keys as keys_module
from usecases.keys import CreateKeyBatch, ExportKeyBatch, KeyUseCases
from usecases.setup import NewBrand, NewClient, NewProductionRun

START = datetime(2025, 3, 1, tzinfo=UTC)
END = START + timedelta(days=90)
ADMIN = Principal(uuid.UUID(int=1), admin=True)


# -- world -----------------------------------------------------------------------------------


@dataclass
class World:
    uc: KeyUseCases
    uow: FakeUnitOfWorkFactory
    clock: FakeClock
    factory: FakeKeyPairFactory
    sealer: FakeSealer
    a: Client
    b: Client
    run_a: ProductionRun
    run_a2: ProductionRun
    run_b: ProductionRun

    def private_of(self, adv: AdvertisementKey) -> bytes:
        """The private key the factory generated for ``adv``."""
        return next(private for private, public in self.factory.generated if public == adv)

    def stored_keys(self) -> list[tuple[int, TagKey]]:
        rows = self.uow.committed.tag_keys.values()
        return sorted(((r.seq, r.key) for r in rows), key=lambda r: (str(r[1].batch_id), r[0]))

    def snapshot(self) -> tuple[FakeTables, int]:
        return self.uow.committed.copy(), self.uow.commits

    async def batch(self, count: int, label: str = "") -> tuple[KeyBatch, list[str]]:
        """A new batch of ``count`` keys and their MACs in order."""
        before = len(self.factory.generated)
        batch = await self.uc.create_key_batch(ADMIN, count, label)
        made = self.factory.generated[before:]
        return batch, [MacAddress.for_advertisement_key(adv).value for _, adv in made]

    async def allocated(self, client: Client, count: int) -> list[str]:
        """MACs of ``count`` new tags allocated to ``client``."""
        _, macs = await self.batch(count)
        assert await self.uc.allocate_tags(ADMIN, client.id, macs) == count
        return macs


async def make_world() -> World:
    uow, clock = FakeUnitOfWorkFactory(), FakeClock(START)
    factory, sealer = FakeKeyPairFactory(), FakeSealer()
    setup = setup_usecases(uow, clock)

    async def client_with_runs(name: str, runs: int) -> tuple[Client, list[ProductionRun]]:
        client = await setup.create_client(ADMIN, NewClient(name))
        brand = await setup.create_brand(ADMIN, NewBrand(client.id, f"{name} brand"))
        made = [
            await setup.create_production_run(
                ADMIN, NewProductionRun(brand.id, f"R{i}", START, END)
            )
            for i in range(runs)
        ]
        return client, made

    a, (run_a, run_a2) = await client_with_runs("A", 2)
    b, (run_b,) = await client_with_runs("B", 1)
    return World(
        key_usecases(uow, factory, sealer, clock),
        uow,
        clock,
        factory,
        sealer,
        a,
        b,
        run_a,
        run_a2,
        run_b,
    )


@pytest.fixture
async def w() -> World:
    return await make_world()


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(keys_module, "CHUNK", 3)
    return 3


NON_ADMINS: dict[str, Callable[[World], Principal]] = {
    "client_admin_a": lambda w: Principal(uuid.uuid4(), memberships={w.a.id: Role.CLIENT_ADMIN}),
    "viewer_a": lambda w: Principal(uuid.uuid4(), memberships={w.a.id: Role.VIEWER}),
    "client_admin_of_both": lambda w: Principal(
        uuid.uuid4(), memberships={w.a.id: Role.CLIENT_ADMIN, w.b.id: Role.CLIENT_ADMIN}
    ),
    "nobody": lambda w: Principal(uuid.uuid4()),
}

# Importing into a run of client A: (caller, expected outcome).
IMPORT_CALLERS: dict[str, tuple[Callable[[World], Principal], type[DomainError] | None]] = {
    "admin": (lambda w: ADMIN, None),
    "client_admin_a": (NON_ADMINS["client_admin_a"], None),
    "viewer_a": (NON_ADMINS["viewer_a"], PermissionDenied),
    "client_admin_b": (
        lambda w: Principal(uuid.uuid4(), memberships={w.b.id: Role.CLIENT_ADMIN}),
        NotFound,
    ),
    "nobody": (NON_ADMINS["nobody"], NotFound),
}


def fields_of(err: InvalidArgument) -> list[str]:
    return [v.field for v in err.violations]


def every_bytes(value: Any) -> Iterator[bytes]:
    """Every bytes value reachable from ``value`` (dataclasses, dicts, sequences)."""
    if isinstance(value, bytes):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from every_bytes(getattr(value, f.name))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from every_bytes(k)
            yield from every_bytes(v)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from every_bytes(item)


def assert_nowhere_in_the_clear(tables: FakeTables, secrets: list[bytes]) -> None:
    stored = list(every_bytes(tables))
    assert stored, "nothing stored at all"
    for secret in secrets:
        assert not any(secret in blob for blob in stored)


# -- CreateKeyBatch --------------------------------------------------------------------------


@pytest.mark.parametrize("who", NON_ADMINS)
@pytest.mark.parametrize("count", [1, 0])
async def test_only_admins_generate_keys(w: World, who: str, count: int) -> None:
    before = w.snapshot()
    with pytest.raises(PermissionDenied):
        await w.uc.create_key_batch(NON_ADMINS[who](w), count)
    assert w.snapshot() == before
    assert w.factory.generated == []


@pytest.mark.parametrize("count", [0, -1, MAX_BATCH_KEYS + 1])
async def test_count_must_be_within_bounds(w: World, count: int) -> None:
    before = w.snapshot()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_key_batch(ADMIN, count)
    assert fields_of(exc.value) == ["count"]
    assert w.snapshot() == before
    assert w.factory.generated == []


def test_a_million_keys_is_the_largest_batch() -> None:
    assert MAX_BATCH_KEYS == 1_000_000
    KeyBatch(id=uuid.uuid4(), label="", size=MAX_BATCH_KEYS, create_time=START)


@pytest.mark.parametrize("label", ["x" * 201, "nul\x00"])
async def test_label_is_checked(w: World, label: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.create_key_batch(ADMIN, 1, label)
    assert fields_of(exc.value) == ["label"]
    assert w.factory.generated == []


async def test_batch_stores_every_key_numbered_in_order(w: World, small_chunks: int) -> None:
    progress: list[tuple[int, int]] = []
    commits = w.uow.commits
    batch = await w.uc.create_key_batch(ADMIN, 10, "line 7", lambda d, t: progress.append((d, t)))
    assert (batch.label, batch.size, batch.create_time) == ("line 7", 10, START)
    assert progress == [(3, 10), (6, 10), (9, 10), (10, 10)]
    assert w.uow.commits == commits + 1
    stored = w.stored_keys()
    assert [seq for seq, _ in stored] == list(range(10))
    assert [key.advertisement_key for _, key in stored] == [adv for _, adv in w.factory.generated]
    assert all(key.batch_id == batch.id and key.client_id is None for _, key in stored)
    assert w.uow.committed.key_batches[batch.id].batch == batch
    assert w.uow.committed.key_batches[batch.id].kek_id == w.sealer.active_kek_id


async def test_progress_is_optional_and_one_chunk_may_hold_the_whole_batch(w: World) -> None:
    batch = await w.uc.create_key_batch(ADMIN, 5)
    assert batch.size == 5
    assert [seq for seq, _ in w.stored_keys()] == list(range(5))


async def test_progress_with_the_real_chunk_size(w: World) -> None:
    progress: list[tuple[int, int]] = []
    count = keys_module.CHUNK + 1
    await w.uc.create_key_batch(ADMIN, count, progress=lambda d, t: progress.append((d, t)))
    assert progress == [(keys_module.CHUNK, count), (count, count)]
    assert len(w.stored_keys()) == count


async def test_private_keys_are_stored_only_sealed_under_the_hashed_key(w: World) -> None:
    await w.uc.create_key_batch(ADMIN, 8)
    stored = w.stored_keys()
    assert len(stored) == 8
    for _, key in stored:
        private = w.private_of(key.advertisement_key)
        sealed = key.sealed_private_key
        assert sealed.kek_id == "fake"
        assert private not in sealed.ciphertext
        assert w.sealer.unseal(sealed, key.advertisement_key.hashed) == private
        with pytest.raises(ValueError, match="context"):
            w.sealer.unseal(sealed, key.advertisement_key.value)
    assert w.sealer.seals == 8
    assert_nowhere_in_the_clear(w.uow.committed, [p for p, _ in w.factory.generated])


async def test_keys_are_generated_off_the_event_loop_thread(w: World, small_chunks: int) -> None:
    await w.uc.create_key_batch(ADMIN, 7)
    assert w.factory.threads
    assert threading.get_ident() not in w.factory.threads


async def test_a_clash_in_a_later_chunk_leaves_no_trace_of_the_batch(
    w: World, small_chunks: int
) -> None:
    # The first batch holds key 10; the second generates keys 7..12, in chunks of 3.
    first = CreateKeyBatch(w.uow, FakeKeyPairFactory(start=10), w.sealer, w.clock)
    second = CreateKeyBatch(w.uow, FakeKeyPairFactory(start=7), w.sealer, w.clock)
    kept = await first(ADMIN, 1)
    before = w.snapshot()
    progress: list[tuple[int, int]] = []
    with pytest.raises(AlreadyExists) as exc:
        await second(ADMIN, 6, progress=lambda d, t: progress.append((d, t)))
    assert (exc.value.kind, exc.value.field) == ("tag key", "mac_address")
    assert progress == [(3, 6)]
    assert w.snapshot() == before
    assert list(w.uow.committed.key_batches) == [kept.id]


@settings(max_examples=30, deadline=None)
@given(count=st.integers(min_value=1, max_value=40), chunk=st.integers(min_value=1, max_value=9))
async def test_progress_rises_to_the_total_in_chunks(count: int, chunk: int) -> None:
    w = await make_world()
    progress: list[tuple[int, int]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keys_module, "CHUNK", chunk)
        await w.uc.create_key_batch(ADMIN, count, progress=lambda d, t: progress.append((d, t)))
    done = [d for d, _ in progress]
    assert all(t == count for _, t in progress)
    assert done == sorted(set(done))
    assert done[-1] == count
    assert len(done) == -(-count // chunk)
    assert all(b - a <= chunk for a, b in zip([0, *done], done, strict=False))
    assert [seq for seq, _ in w.stored_keys()] == list(range(count))


# -- ExportKeyBatch --------------------------------------------------------------------------


async def export(w: World, batch_id: uuid.UUID, fmt: str, page: int | None = None) -> list[str]:
    use_case = w.uc.export_key_batch if page is None else ExportKeyBatch(w.uow, page=page)
    return [chunk async for chunk in await use_case(ADMIN, batch_id, fmt)]


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def test_csv_export_has_a_header_and_one_row_per_key_in_order(w: World) -> None:
    batch, macs = await w.batch(5)
    await w.batch(3)  # another batch: not exported
    text = "".join(await export(w, batch.id, "csv"))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["mac_address", "advertisement_key", "hashed_advertisement_key"]
    advs = [adv for _, adv in w.factory.generated[:5]]
    assert rows[1:] == [
        [mac, b64(adv.value), b64(hashlib.sha256(adv.value).digest())]
        for mac, adv in zip(macs, advs, strict=True)
    ]
    for mac, adv_text, _ in rows[1:]:
        assert MacAddress.for_advertisement_key(AdvertisementKey(base64.b64decode(adv_text))) == (
            MacAddress(mac)
        )


async def test_keys_export_is_one_base64_key_per_line(w: World) -> None:
    batch, _ = await w.batch(4)
    text = "".join(await export(w, batch.id, "keys"))
    assert text.endswith("\n")
    assert text.splitlines() == [b64(adv.value) for _, adv in w.factory.generated]


@pytest.mark.parametrize("fmt", ["csv", "keys"])
async def test_export_never_shows_a_private_key(w: World, fmt: str) -> None:
    batch, _ = await w.batch(6)
    text = "".join(await export(w, batch.id, fmt))
    for private, _ in w.factory.generated:
        assert b64(private) not in text
        assert private.hex() not in text.lower()


@pytest.mark.parametrize("count", [20, 21, 6, 7, 1])
async def test_export_streams_page_by_page(w: World, count: int) -> None:
    batch, macs = await w.batch(count)
    opened = len(w.uow.opened)
    chunks = await ExportKeyBatch(w.uow, page=7)(ADMIN, batch.id, "keys")
    assert len(w.uow.opened) == opened + 1  # the batch was checked; nothing streamed yet
    parts = [chunk async for chunk in chunks]
    pages = -(-count // 7)
    assert [len(p.splitlines()) for p in parts] == [7] * (count // 7) + (
        [count % 7] if count % 7 else []
    )
    assert len(w.uow.opened) == opened + 1 + pages + 1  # one per page, one that finds the end
    assert "".join(parts).splitlines() == [b64(adv.value) for _, adv in w.factory.generated]
    csv_parts = await export(w, batch.id, "csv", page=7)
    assert len(csv_parts) == 1 + pages
    assert [row.split(",")[0] for row in "".join(csv_parts).splitlines()[1:]] == macs


async def test_export_of_an_unknown_batch_is_not_found_before_streaming(w: World) -> None:
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as exc:
        await w.uc.export_key_batch(ADMIN, missing, "csv")
    assert (exc.value.kind, exc.value.ident) == ("key batch", str(missing))


@pytest.mark.parametrize("fmt", ["", "CSV", "json", "keys\n"])
async def test_export_format_must_be_csv_or_keys(w: World, fmt: str) -> None:
    batch, _ = await w.batch(1)
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.export_key_batch(ADMIN, batch.id, fmt)
    assert fields_of(exc.value) == ["format"]


@pytest.mark.parametrize("who", NON_ADMINS)
async def test_only_admins_export(w: World, who: str) -> None:
    batch, _ = await w.batch(1)
    for batch_id, fmt in ((batch.id, "csv"), (uuid.uuid4(), "csv"), (batch.id, "bad")):
        with pytest.raises(PermissionDenied):
            await w.uc.export_key_batch(NON_ADMINS[who](w), batch_id, fmt)


# -- AllocateTags ----------------------------------------------------------------------------


def owners(w: World) -> dict[str, uuid.UUID | None]:
    return {k.mac_address.value: k.client_id for _, k in w.stored_keys()}


async def test_allocating_gives_the_tags_to_the_client(w: World) -> None:
    _, macs = await w.batch(4)
    assert await w.uc.allocate_tags(ADMIN, w.a.id, macs[:2]) == 2
    assert owners(w) == {macs[0]: w.a.id, macs[1]: w.a.id, macs[2]: None, macs[3]: None}


async def test_macs_may_be_spelled_any_accepted_way(w: World) -> None:
    _, macs = await w.batch(3)
    spelled = [macs[0].lower(), macs[1].replace(":", "-"), " " + macs[2].replace(":", "") + " "]
    assert await w.uc.allocate_tags(ADMIN, w.a.id, spelled) == 3
    assert set(owners(w).values()) == {w.a.id}


async def test_reallocating_to_the_same_client_is_fine(w: World) -> None:
    _, macs = await w.batch(3)
    await w.uc.allocate_tags(ADMIN, w.a.id, macs[:2])
    assert await w.uc.allocate_tags(ADMIN, w.a.id, macs) == 3
    assert set(owners(w).values()) == {w.a.id}


@pytest.mark.parametrize("who", NON_ADMINS)
async def test_only_admins_allocate(w: World, who: str) -> None:
    _, macs = await w.batch(2)
    before = w.snapshot()
    with pytest.raises(PermissionDenied):
        await w.uc.allocate_tags(NON_ADMINS[who](w), w.a.id, macs)
    assert w.snapshot() == before


@pytest.mark.parametrize("bad", ["nope", "", "AA:BB:CC:DD:EE", "AA:BB-CC:DD:EE:FF", "GG" * 6])
@pytest.mark.parametrize("at", [0, 2])
async def test_a_malformed_mac_names_its_index(w: World, bad: str, at: int) -> None:
    _, macs = await w.batch(3)
    texts = list(macs)
    texts[at] = bad
    before = w.snapshot()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.allocate_tags(ADMIN, w.a.id, texts)
    assert fields_of(exc.value) == [f"mac_addresses[{at}]"]
    assert w.snapshot() == before


async def test_a_mac_given_twice_is_invalid(w: World) -> None:
    _, macs = await w.batch(3)
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.allocate_tags(ADMIN, w.a.id, [macs[0], macs[1], macs[0].lower()])
    assert fields_of(exc.value) == ["mac_addresses[2]"]
    assert "twice" in str(exc.value)


@pytest.mark.parametrize("n", [0, MAX_IMPORT + 1])
async def test_allocation_size_is_limited(w: World, n: int) -> None:
    macs = [f"C0:00:00:00:{i // 256:02X}:{i % 256:02X}" for i in range(n)]
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.allocate_tags(ADMIN, w.a.id, macs)
    assert fields_of(exc.value) == ["mac_addresses"]


async def test_an_unknown_mac_is_not_found_and_nothing_is_allocated(w: World) -> None:
    _, macs = await w.batch(2)
    unknown = "C0:00:00:00:00:01"
    before = w.snapshot()
    with pytest.raises(NotFound) as exc:
        await w.uc.allocate_tags(ADMIN, w.a.id, [macs[0], unknown.lower(), macs[1]])
    assert (exc.value.kind, exc.value.ident) == ("tag key", unknown)
    assert w.snapshot() == before


async def test_a_tag_of_another_client_is_refused_and_nothing_is_allocated(w: World) -> None:
    _, macs = await w.batch(3)
    await w.uc.allocate_tags(ADMIN, w.b.id, [macs[1]])
    before = w.snapshot()
    with pytest.raises(FailedPrecondition) as exc:
        await w.uc.allocate_tags(ADMIN, w.a.id, macs)
    assert exc.value.subject == "mac_addresses[1]"
    assert macs[1] in exc.value.reason
    assert w.snapshot() == before
    assert owners(w) == {macs[0]: None, macs[1]: w.b.id, macs[2]: None}


async def test_allocating_to_an_unknown_client_is_not_found(w: World) -> None:
    _, macs = await w.batch(1)
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as exc:
        await w.uc.allocate_tags(ADMIN, missing, macs)
    assert (exc.value.kind, exc.value.ident) == ("client", str(missing))
    assert owners(w) == {macs[0]: None}


# -- ImportTrackers --------------------------------------------------------------------------


def stored_trackers(w: World) -> list[Tracker]:
    return list(w.uow.committed.trackers.values())


@pytest.mark.parametrize("who", IMPORT_CALLERS)
async def test_who_may_import_tags_into_a_run(w: World, who: str) -> None:
    make_caller, outcome = IMPORT_CALLERS[who]
    macs = await w.allocated(w.a, 2)
    before = w.snapshot()
    if outcome is None:
        trackers = await w.uc.import_trackers(make_caller(w), w.run_a.id, macs)
        assert [t.mac_address.value for t in trackers] == macs
        return
    with pytest.raises(outcome) as exc:
        await w.uc.import_trackers(make_caller(w), w.run_a.id, macs)
    assert w.snapshot() == before
    if outcome is NotFound:
        # Exactly like a run that does not exist.
        missing = uuid.uuid4()
        with pytest.raises(NotFound) as unknown:
            await w.uc.import_trackers(ADMIN, missing, macs)
        assert str(exc.value) == str(unknown.value).replace(str(missing), str(w.run_a.id))


async def test_imported_trackers_carry_the_tags_key_sealed_key_and_client(w: World) -> None:
    macs = await w.allocated(w.a, 3)
    tags = {k.mac_address.value: k for _, k in w.stored_keys()}
    w.clock.advance(timedelta(hours=1))
    trackers = await w.uc.import_trackers(ADMIN, w.run_a.id, macs)
    assert [t.mac_address.value for t in trackers] == macs
    for tracker in trackers:
        tag = tags[tracker.mac_address.value]
        assert tracker.client_id == w.a.id
        assert tracker.production_run_id == w.run_a.id
        assert tracker.advertisement_key == tag.advertisement_key
        assert tracker.sealed_private_key == tag.sealed_private_key
        assert tracker.create_time == tracker.update_time == START + timedelta(hours=1)
        assert tracker.sealed_private_key is not None
        opened = w.sealer.unseal(tracker.sealed_private_key, tracker.hashed_advertisement_key)
        assert opened == w.private_of(tracker.advertisement_key)
    assert sorted(stored_trackers(w), key=lambda t: str(t.id)) == sorted(
        trackers, key=lambda t: str(t.id)
    )
    assert_nowhere_in_the_clear(w.uow.committed, [p for p, _ in w.factory.generated])


@pytest.mark.parametrize("whose", ["unallocated", "client_b"])
async def test_a_tag_not_of_the_runs_client_looks_like_an_unknown_mac(w: World, whose: str) -> None:
    mine = await w.allocated(w.a, 2)
    if whose == "client_b":
        [other] = await w.allocated(w.b, 1)
    else:
        _, [other] = await w.batch(1)
    unknown = "C0:00:00:00:00:01"
    before = w.snapshot()
    with pytest.raises(NotFound) as hidden:
        await w.uc.import_trackers(ADMIN, w.run_a.id, [mine[0], other, mine[1]])
    with pytest.raises(NotFound) as missing:
        await w.uc.import_trackers(ADMIN, w.run_a.id, [mine[0], unknown, mine[1]])
    assert type(hidden.value) is type(missing.value)
    assert hidden.value.kind == missing.value.kind == "tag key"
    assert str(hidden.value) == str(missing.value).replace(unknown, other)
    assert w.snapshot() == before


async def test_a_tag_becomes_a_tracker_only_once(w: World) -> None:
    macs = await w.allocated(w.a, 2)
    await w.uc.import_trackers(ADMIN, w.run_a.id, macs[:1])
    before = w.snapshot()
    for run in (w.run_a, w.run_a2):
        with pytest.raises(AlreadyExists) as exc:
            await w.uc.import_trackers(ADMIN, run.id, [macs[1], macs[0]])
        # Named by the item of the request, not by what it clashed with.
        assert (exc.value.kind, exc.value.field, exc.value.value) == (
            "tracker",
            "mac_addresses[1]",
            macs[0],
        )
    assert w.snapshot() == before


async def test_import_checks_its_mac_list(w: World) -> None:
    macs = await w.allocated(w.a, 2)
    for texts, field in (
        ([macs[0], "bad"], "mac_addresses[1]"),
        ([macs[0], macs[1], macs[0]], "mac_addresses[2]"),
        ([], "mac_addresses"),
        (["C0:00:00:00:00:00"] * (MAX_IMPORT + 1), "mac_addresses"),
    ):
        with pytest.raises(InvalidArgument) as exc:
            await w.uc.import_trackers(ADMIN, w.run_a.id, texts)
        assert fields_of(exc.value) == [field]
    assert stored_trackers(w) == []


async def test_import_into_an_unknown_run_is_not_found(w: World) -> None:
    macs = await w.allocated(w.a, 1)
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as exc:
        await w.uc.import_trackers(ADMIN, missing, macs)
    assert (exc.value.kind, exc.value.ident) == ("production run", str(missing))


# -- ImportExternalTrackers ------------------------------------------------------------------


def external(n: int) -> bytes:
    return hashlib.sha256(f"external-{n}".encode()).digest()[:28]


async def test_external_keys_are_sealed_on_arrival(w: World) -> None:
    privates = [external(n) for n in range(4)]
    trackers = await w.uc.import_external_trackers(ADMIN, w.run_a.id, privates)
    assert len(trackers) == 4
    for private, tracker in zip(privates, trackers, strict=True):
        assert tracker.advertisement_key == w.factory.public_of(private)
        assert (tracker.client_id, tracker.production_run_id) == (w.a.id, w.run_a.id)
        sealed = tracker.sealed_private_key
        assert sealed is not None
        assert sealed.kek_id == w.sealer.active_kek_id
        assert w.sealer.unseal(sealed, tracker.advertisement_key.hashed) == private
        with pytest.raises(ValueError, match="context"):
            w.sealer.unseal(sealed, tracker.advertisement_key.value)
    assert {t.id for t in stored_trackers(w)} == {t.id for t in trackers}
    assert_nowhere_in_the_clear(w.uow.committed, privates)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01" * 27, b"\x01" * 29, bytes(28), b"\xff" * 28],
    ids=["empty", "short", "long", "zero", "all_ff"],
)
@pytest.mark.parametrize("at", [0, 2])
async def test_an_invalid_private_key_names_its_index(w: World, bad: bytes, at: int) -> None:
    privates = [external(n) for n in range(3)]
    privates[at] = bad
    before = w.snapshot()
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.import_external_trackers(ADMIN, w.run_a.id, privates)
    assert fields_of(exc.value) == [f"private_keys[{at}]"]
    assert w.snapshot() == before


async def test_a_private_key_given_twice_is_invalid(w: World) -> None:
    privates = [external(0), external(1), external(0)]
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.import_external_trackers(ADMIN, w.run_a.id, privates)
    assert fields_of(exc.value) == ["private_keys[2]"]
    assert stored_trackers(w) == []


@pytest.mark.parametrize("n", [0, MAX_IMPORT + 1])
async def test_external_import_size_is_limited(w: World, n: int) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await w.uc.import_external_trackers(ADMIN, w.run_a.id, [external(0)] * n)
    assert fields_of(exc.value) == ["private_keys"]


async def test_an_external_key_already_a_tracker_already_exists(w: World) -> None:
    await w.uc.import_external_trackers(ADMIN, w.run_a.id, [external(0)])
    before = w.snapshot()
    with pytest.raises(AlreadyExists) as exc:
        await w.uc.import_external_trackers(ADMIN, w.run_a2.id, [external(1), external(0)])
    assert exc.value.kind == "tracker"
    assert w.snapshot() == before


@pytest.mark.parametrize("who", IMPORT_CALLERS)
async def test_who_may_import_external_keys_into_a_run(w: World, who: str) -> None:
    make_caller, outcome = IMPORT_CALLERS[who]
    before = w.snapshot()

    async def call() -> list[Tracker]:
        return await w.uc.import_external_trackers(make_caller(w), w.run_a.id, [external(0)])

    if outcome is None:
        assert len(await call()) == 1
        return
    with pytest.raises(outcome):
        await call()
    assert w.snapshot() == before
    assert w.sealer.seals == 0


async def test_external_import_into_another_clients_run_is_hidden_like_a_missing_run(
    w: World,
) -> None:
    caller = Principal(uuid.uuid4(), memberships={w.b.id: Role.CLIENT_ADMIN})
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as hidden:
        await w.uc.import_external_trackers(caller, w.run_a.id, [external(0)])
    with pytest.raises(NotFound) as unknown:
        await w.uc.import_external_trackers(ADMIN, missing, [external(0)])
    assert str(hidden.value) == str(unknown.value).replace(str(missing), str(w.run_a.id))


@settings(max_examples=25, deadline=None)
@given(
    privates=st.lists(
        st.binary(min_size=28, max_size=28).filter(lambda b: b not in (bytes(28), b"\xff" * 28)),
        min_size=1,
        max_size=12,
        unique=True,
    )
)
async def test_any_valid_external_keys_round_trip_sealed(privates: list[bytes]) -> None:
    w = await make_world()
    trackers = await w.uc.import_external_trackers(ADMIN, w.run_b.id, privates)
    opened = [
        w.sealer.unseal(t.sealed_private_key, t.hashed_advertisement_key)
        for t in trackers
        if t.sealed_private_key is not None
    ]
    assert opened == privates
    assert all(t.client_id == w.b.id for t in trackers)
    assert_nowhere_in_the_clear(w.uow.committed, privates)
