"""The fakes keep the ports' contracts, so use-case tests on them mean something."""

from __future__ import annotations

import dataclasses
import inspect
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.access import AccessClaims, RefreshToken, Role, User
from domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from domain.keys import GeneratedKey, KeyBatch
from domain.model import (
    AdvertisementKey,
    Brand,
    Client,
    Entity,
    GeoPoint,
    Location,
    LocationKind,
    ProductionRun,
    SealedSecret,
    Tracker,
)
from domain.pagination import PageRequest
from domain.ports.access import (
    AccessUnitOfWork,
    PasswordHasher,
    RefreshTokenRepository,
    TokenCodec,
    UserFilter,
    UserRepository,
)
from domain.ports.common import Clock
from domain.ports.fetching import AccountGate, FetchingUnitOfWork, FetchQueue, FetchStateRepository
from domain.ports.keys import KeyPairFactory, KeysUnitOfWork, SecretSealer, TagKeyRepository
from domain.ports.reports import ReportRepository, ReportsUnitOfWork
from domain.ports.setup import (
    BrandFilter,
    BrandRepository,
    ClientFilter,
    ClientRepository,
    LocationFilter,
    LocationRepository,
    ProductionRunFilter,
    ProductionRunRepository,
    SetupUnitOfWork,
    TrackerFilter,
    TrackerRepository,
)
from domain.ports.status import StatusUnitOfWork
from domain.reports import Report

from .fakes import (
    FakeAccountGate,
    FakeBrandRepository,
    FakeClientRepository,
    FakeClock,
    FakeFetchQueue,
    FakeFetchStateRepository,
    FakeKeyPairFactory,
    FakeLocationRepository,
    FakePasswordHasher,
    FakeProductionRunRepository,
    FakeRefreshTokenRepository,
    FakeReportRepository,
    FakeRepository,
    FakeSealer,
    FakeTagKeyRepository,
    FakeTokenCodec,
    FakeTrackerRepository,
    FakeUnitOfWork,
    FakeUnitOfWorkFactory,
    FakeUserRepository,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def a_client(name: str = "Acme") -> Client:
    return Client(id=uuid.uuid4(), create_time=T0, update_time=T0, display_name=name)


def a_brand(client: Client) -> Brand:
    return Brand(
        id=uuid.uuid4(), create_time=T0, update_time=T0, client_id=client.id, display_name="B"
    )


def a_run(brand: Brand, client_id: uuid.UUID | None = None) -> ProductionRun:
    return ProductionRun(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        brand_id=brand.id,
        client_id=client_id or brand.client_id,
        display_name="R",
        start_time=T0,
        end_time=T0 + timedelta(days=1),
    )


def a_location(run: ProductionRun, client_id: uuid.UUID | None = None) -> Location:
    return Location(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        production_run_id=run.id,
        client_id=client_id or run.client_id,
        kind=LocationKind.DELIVERY,
        display_name="L",
        center=GeoPoint(0.0, 0.0),
        radius_m=10.0,
    )


def a_user(
    email: str = "user@example.com", memberships: dict[uuid.UUID, Role] | None = None
) -> User:
    return User(
        id=uuid.uuid4(),
        email=email,
        password_hash="fake$x",
        memberships=memberships or {},
        create_time=T0,
        update_time=T0,
    )


def a_refresh_token(user: User, token_hash: bytes = b"h" * 32) -> RefreshToken:
    return RefreshToken(
        id=uuid.uuid4(), user_id=user.id, token_hash=token_hash, expires_at=T0 + timedelta(days=1)
    )


def a_tracker(run: ProductionRun, raw: bytes) -> Tracker:
    return Tracker(
        id=uuid.uuid4(),
        create_time=T0,
        update_time=T0,
        client_id=run.client_id,
        production_run_id=run.id,
        advertisement_key=AdvertisementKey(raw),
    )


@pytest.mark.parametrize(
    ("port", "fake"),
    [
        (ClientRepository, FakeClientRepository),
        (BrandRepository, FakeBrandRepository),
        (ProductionRunRepository, FakeProductionRunRepository),
        (LocationRepository, FakeLocationRepository),
        (TrackerRepository, FakeTrackerRepository),
        (UserRepository, FakeUserRepository),
        (RefreshTokenRepository, FakeRefreshTokenRepository),
        (SetupUnitOfWork, FakeUnitOfWork),
        (AccessUnitOfWork, FakeUnitOfWork),
        (KeysUnitOfWork, FakeUnitOfWork),
        (ReportsUnitOfWork, FakeUnitOfWork),
        (FetchingUnitOfWork, FakeUnitOfWork),
        (StatusUnitOfWork, FakeUnitOfWork),
        (Clock, FakeClock),
        (PasswordHasher, FakePasswordHasher),
        (TokenCodec, FakeTokenCodec),
        (TagKeyRepository, FakeTagKeyRepository),
        (KeyPairFactory, FakeKeyPairFactory),
        (SecretSealer, FakeSealer),
        (ReportRepository, FakeReportRepository),
        (FetchStateRepository, FakeFetchStateRepository),
        (FetchQueue, FakeFetchQueue),
        (AccountGate, FakeAccountGate),
    ],
)
def test_fake_has_every_method_of_its_port_with_the_same_parameters(port: type, fake: type) -> None:
    for name, member in inspect.getmembers(port, inspect.isfunction):
        if name.startswith("_") and name not in {"__aenter__", "__aexit__"}:
            continue
        ours = getattr(fake, name)
        assert inspect.iscoroutinefunction(ours) == inspect.iscoroutinefunction(member), name
        assert list(inspect.signature(ours).parameters) == list(
            inspect.signature(member).parameters
        ), name
    for attribute in getattr(port, "__annotations__", {}):
        assert attribute in fake.__annotations__, attribute


async def test_committed_changes_are_visible_to_later_units_of_work() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.commit()
    async with factory() as uow:
        assert await uow.clients.get(client.id) == client


async def test_uncommitted_changes_are_discarded_on_exit() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        assert await uow.clients.get(client.id) == client
    async with factory() as uow:
        with pytest.raises(NotFound):
            await uow.clients.get(client.id)
    assert factory.commits == 0


async def test_changes_are_invisible_to_another_unit_of_work_until_commit() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as writer:
        await writer.clients.add(client)
        async with factory() as reader:
            with pytest.raises(NotFound):
                await reader.clients.get(client.id)
        await writer.commit()
        async with factory() as reader:
            assert await reader.clients.get(client.id) == client


async def test_a_unit_of_work_does_not_see_commits_made_after_it_began() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as early:
        async with factory() as writer:
            await writer.clients.add(client)
            await writer.commit()
        with pytest.raises(NotFound):
            await early.clients.get(client.id)


async def test_error_inside_a_unit_of_work_rolls_back() -> None:
    factory = FakeUnitOfWorkFactory()

    async def add_then_fail() -> None:
        async with factory() as uow:
            await uow.clients.add(a_client())
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await add_then_fail()
    assert factory.committed.clients == {}


async def test_repositories_refuse_use_outside_their_unit_of_work() -> None:
    factory = FakeUnitOfWorkFactory()
    async with factory() as uow:
        pass
    with pytest.raises(RuntimeError):
        await uow.clients.get(uuid.uuid4())


async def test_add_with_a_missing_parent_is_not_found() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        with pytest.raises(NotFound) as exc:
            await uow.brands.add(a_brand(client))
        assert exc.value.kind == "parent of brand"
        await uow.clients.add(client)
        brand = a_brand(client)
        await uow.brands.add(brand)
        with pytest.raises(NotFound):
            await uow.production_runs.add(a_run(brand, client_id=uuid.uuid4()))


async def test_add_of_an_existing_id_already_exists() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        with pytest.raises(AlreadyExists) as exc:
            await uow.clients.add(client)
        assert exc.value.field == "id"


async def test_tracker_clashes_name_mac_before_key_like_postgres() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    brand = a_brand(client)
    run = a_run(brand)
    raw = bytes(range(28))
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.brands.add(brand)
        await uow.production_runs.add(run)
        await uow.trackers.add(a_tracker(run, raw))
        with pytest.raises(AlreadyExists) as exc:
            await uow.trackers.add_many([a_tracker(run, bytes(28)), a_tracker(run, raw)])
        assert (exc.value.field, exc.value.value) == ("mac_address", "C0:01:02:03:04:05")
        page = await uow.trackers.list(TrackerFilter(), PageRequest())
        assert len(page.items) == 1


async def test_delete_refuses_parents_with_children_unless_cascading() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.brands.add(a_brand(client))
        with pytest.raises(FailedPrecondition):
            await uow.clients.delete(client.id, cascade=False)
        await uow.clients.delete(client.id, cascade=True)
        with pytest.raises(NotFound):
            await uow.clients.delete(client.id, cascade=True)


async def test_list_pages_in_id_text_order() -> None:
    factory = FakeUnitOfWorkFactory()
    clients = [a_client(f"C{i}") for i in range(5)]
    async with factory() as uow:
        for c in clients:
            await uow.clients.add(c)
        first = await uow.clients.list(ClientFilter(), PageRequest(size=3))
        rest = await uow.clients.list(ClientFilter(), PageRequest(size=3, after=first.next_after))
    ids = [str(c.id) for c in first.items + rest.items]
    assert ids == sorted(str(c.id) for c in clients)
    assert first.next_after == ids[2]
    assert rest.next_after is None


def test_fake_clock_is_settable_and_always_utc() -> None:
    clock = FakeClock(datetime(2025, 6, 1, 14, tzinfo=timezone(timedelta(hours=2))))
    assert clock.now() == datetime(2025, 6, 1, 12, tzinfo=UTC)
    assert clock.now().tzinfo is UTC
    assert clock.advance(timedelta(minutes=5)) == datetime(2025, 6, 1, 12, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("entity", "fake"),
    [
        (Client, FakeClientRepository),
        (Brand, FakeBrandRepository),
        (ProductionRun, FakeProductionRunRepository),
        (Location, FakeLocationRepository),
        (Tracker, FakeTrackerRepository),
    ],
)
def test_fake_not_found_names_the_same_kind_as_the_entity(
    entity: type[Entity], fake: type[FakeRepository[Any, Any]]
) -> None:
    # Use cases hide another client's resource as NotFound(entity.KIND, id); a missing one
    # comes from the repository. Both must read the same.
    assert fake.kind == entity.KIND


# -- visible_clients -------------------------------------------------------------------------


async def two_clients_with_everything(factory: FakeUnitOfWorkFactory) -> tuple[Client, Client]:
    a, b = a_client("A"), a_client("B")
    async with factory() as uow:
        for n, client in enumerate((a, b)):
            brand = a_brand(client)
            run = a_run(brand)
            await uow.clients.add(client)
            await uow.brands.add(brand)
            await uow.production_runs.add(run)
            await uow.locations.add(a_location(run))
            await uow.trackers.add(a_tracker(run, bytes([n + 1]) * 28))
        await uow.commit()
    return a, b


@pytest.mark.parametrize(
    ("repo", "make_filter"),
    [
        ("clients", ClientFilter),
        ("brands", BrandFilter),
        ("production_runs", ProductionRunFilter),
        ("locations", LocationFilter),
        ("trackers", TrackerFilter),
    ],
)
async def test_every_list_returns_only_rows_of_the_visible_clients(
    repo: str, make_filter: Any
) -> None:
    factory = FakeUnitOfWorkFactory()
    a, b = await two_clients_with_everything(factory)
    every = PageRequest(size=100)
    async with factory() as uow:
        repository = getattr(uow, repo)

        async def owners(visible: frozenset[uuid.UUID] | None) -> list[uuid.UUID]:
            page = await repository.list(make_filter(visible_clients=visible), every)
            return sorted(e.owner_client_id for e in page.items)

        assert await owners(None) == sorted([a.id, b.id])
        assert await owners(frozenset({a.id})) == [a.id]
        assert await owners(frozenset({b.id, uuid.uuid4()})) == [b.id]
        assert await owners(frozenset()) == []


async def test_a_location_whose_client_differs_from_its_runs_is_a_missing_parent() -> None:
    factory = FakeUnitOfWorkFactory()
    a, b = await two_clients_with_everything(factory)
    async with factory() as uow:
        runs = await uow.production_runs.list(ProductionRunFilter(client_id=a.id), PageRequest())
        run = runs.items[0]
        with pytest.raises(NotFound) as exc:
            await uow.locations.add(a_location(run, client_id=b.id))
        assert exc.value.kind == "parent of location"


# -- users and refresh tokens ----------------------------------------------------------------


async def test_user_email_is_unique_and_names_the_field() -> None:
    factory = FakeUnitOfWorkFactory()
    async with factory() as uow:
        await uow.users.add(a_user("ann@example.com"))
        with pytest.raises(AlreadyExists) as exc:
            await uow.users.add(a_user("Ann@Example.com"))
        assert (exc.value.kind, exc.value.field, exc.value.value) == (
            "user",
            "email",
            "ann@example.com",
        )
        bob = a_user("bob@example.com")
        await uow.users.add(bob)
        with pytest.raises(AlreadyExists):
            await uow.users.update(dataclasses.replace(bob, email="ann@example.com"))


async def test_missing_user_is_not_found_naming_kind_and_id() -> None:
    factory = FakeUnitOfWorkFactory()
    missing = uuid.uuid4()
    async with factory() as uow:
        for call in (
            uow.users.get(missing),
            uow.users.delete(missing),
            uow.users.update(dataclasses.replace(a_user(), id=missing)),
        ):
            with pytest.raises(NotFound) as exc:
                await call
            assert (exc.value.kind, exc.value.ident) == ("user", str(missing))
        assert await uow.users.find_by_email("nobody@example.com") is None


async def test_user_membership_of_a_missing_client_is_a_missing_parent() -> None:
    factory = FakeUnitOfWorkFactory()
    async with factory() as uow:
        with pytest.raises(NotFound) as exc:
            await uow.users.add(a_user(memberships={uuid.uuid4(): Role.VIEWER}))
        assert exc.value.kind.startswith("parent of")


async def test_users_and_tokens_follow_commit_and_rollback() -> None:
    factory = FakeUnitOfWorkFactory()
    user = a_user()
    async with factory() as uow:
        await uow.users.add(user)
        await uow.refresh_tokens.add(a_refresh_token(user))
    async with factory() as uow:
        assert await uow.users.find_by_email(user.email) is None
        await uow.users.add(user)
        await uow.refresh_tokens.add(a_refresh_token(user))
        await uow.commit()
    async with factory() as uow:
        assert await uow.users.get(user.id) == user
        await uow.refresh_tokens.revoke_all(user.id)
    async with factory() as uow:
        token = await uow.refresh_tokens.find(b"h" * 32)
        assert token is not None
        assert not token.revoked


async def test_deleting_a_user_deletes_their_refresh_tokens() -> None:
    factory = FakeUnitOfWorkFactory()
    user, other = a_user("a@example.com"), a_user("b@example.com")
    async with factory() as uow:
        await uow.users.add(user)
        await uow.users.add(other)
        await uow.refresh_tokens.add(a_refresh_token(user, b"1" * 32))
        await uow.refresh_tokens.add(a_refresh_token(other, b"2" * 32))
        await uow.users.delete(user.id)
        assert await uow.refresh_tokens.find(b"1" * 32) is None
        assert await uow.refresh_tokens.find(b"2" * 32) is not None


async def test_deleting_a_client_removes_it_from_every_membership() -> None:
    factory = FakeUnitOfWorkFactory()
    a, b = await two_clients_with_everything(factory)
    user = a_user(memberships={a.id: Role.VIEWER, b.id: Role.CLIENT_ADMIN})
    async with factory() as uow:
        await uow.users.add(user)
        await uow.clients.delete(a.id, cascade=True)
        assert dict((await uow.users.get(user.id)).memberships) == {b.id: Role.CLIENT_ADMIN}


async def test_refresh_tokens_revoke_one_or_all_of_a_user() -> None:
    factory = FakeUnitOfWorkFactory()
    user, other = a_user("a@example.com"), a_user("b@example.com")
    async with factory() as uow:
        await uow.users.add(user)
        await uow.users.add(other)
        first, second = a_refresh_token(user, b"1" * 32), a_refresh_token(user, b"2" * 32)
        theirs = a_refresh_token(other, b"3" * 32)
        for token in (first, second, theirs):
            await uow.refresh_tokens.add(token)
        with pytest.raises(AlreadyExists):
            await uow.refresh_tokens.add(a_refresh_token(other, b"3" * 32))
        with pytest.raises(NotFound):
            await uow.refresh_tokens.add(a_refresh_token(a_user(), b"4" * 32))

        async def revoked(h: bytes) -> bool:
            token = await uow.refresh_tokens.find(h)
            assert token is not None
            return token.revoked

        await uow.refresh_tokens.revoke(first.id)
        assert [await revoked(h * 32) for h in (b"1", b"2", b"3")] == [True, False, False]
        await uow.refresh_tokens.revoke_all(user.id)
        assert [await revoked(h * 32) for h in (b"1", b"2", b"3")] == [True, True, False]


async def test_user_list_honours_visible_clients_and_pages_by_id() -> None:
    factory = FakeUnitOfWorkFactory()
    a, b = await two_clients_with_everything(factory)
    in_a = [a_user(f"a{i}@example.com", {a.id: Role.VIEWER}) for i in range(4)]
    in_both = a_user("ab@example.com", {a.id: Role.VIEWER, b.id: Role.CLIENT_ADMIN})
    in_b = a_user("b@example.com", {b.id: Role.VIEWER})
    nowhere = a_user("none@example.com")
    async with factory() as uow:
        for user in [*in_a, in_both, in_b, nowhere]:
            await uow.users.add(user)

        async def ids(visible: frozenset[uuid.UUID] | None, size: int = 100) -> list[str]:
            seen: list[str] = []
            after = None
            while True:
                page = await uow.users.list(UserFilter(visible), PageRequest(size, after))
                seen += [str(u.id) for u in page.items]
                if page.next_after is None:
                    return seen
                after = page.next_after

        def expected(users: list[User]) -> list[str]:
            return sorted(str(u.id) for u in users)

        assert await ids(None) == expected([*in_a, in_both, in_b, nowhere])
        assert await ids(frozenset({a.id}), size=2) == expected([*in_a, in_both])
        assert await ids(frozenset({b.id})) == expected([in_both, in_b])
        assert await ids(frozenset()) == []


# -- password hasher and token codec ---------------------------------------------------------


async def test_fake_hasher_verifies_only_the_hashed_password() -> None:
    hasher = FakePasswordHasher()
    hashed = await hasher.hash("correct horse battery")
    assert hashed.startswith("fake$")
    assert "correct horse battery" not in hashed
    assert await hasher.verify(hashed, "correct horse battery")
    assert not await hasher.verify(hashed, "correct horse batteri")
    assert not await hasher.verify("garbage", "correct horse battery")
    assert (hasher.hashed, hasher.verified) == (1, 3)


def claims(expires_in: timedelta = timedelta(minutes=5)) -> AccessClaims:
    return AccessClaims(
        user_id=uuid.uuid4(),
        token_id="t1",
        kind="access",
        issued_at=FakeClock.START,
        expires_at=FakeClock.START + expires_in,
    )


def test_fake_codec_round_trips_its_claims() -> None:
    codec = FakeTokenCodec(FakeClock())
    original = claims()
    assert codec.decode(codec.encode(original)) == original


def test_fake_codec_rejects_expired_tokens_by_its_clock() -> None:
    clock = FakeClock()
    codec = FakeTokenCodec(clock)
    token = codec.encode(claims(timedelta(minutes=5)))
    clock.advance(timedelta(minutes=4, seconds=59))
    codec.decode(token)
    clock.advance(timedelta(seconds=1))
    with pytest.raises(Unauthenticated):
        codec.decode(token)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),
        lambda t: "x" + t,
        lambda t: t.split(".")[0],
        lambda t: "",
        lambda t: "not a token at all",
    ],
)
def test_fake_codec_rejects_tampered_or_unknown_tokens(tamper: Any) -> None:
    codec = FakeTokenCodec(FakeClock())
    with pytest.raises(Unauthenticated):
        codec.decode(tamper(codec.encode(claims())))


def test_fake_codec_rejects_tokens_signed_with_another_key() -> None:
    clock = FakeClock()
    token = FakeTokenCodec(clock, key=b"other").encode(claims())
    with pytest.raises(Unauthenticated):
        FakeTokenCodec(clock).decode(token)


# -- trackers with sealed private keys -------------------------------------------------------


async def test_trackers_keep_their_sealed_private_key() -> None:
    factory = FakeUnitOfWorkFactory()
    client = a_client()
    brand = a_brand(client)
    run = a_run(brand)
    sealed = SealedSecret("kek-1", b"ciphertext")
    one = dataclasses.replace(a_tracker(run, b"\x01" * 28), sealed_private_key=sealed)
    two = dataclasses.replace(a_tracker(run, b"\x02" * 28), sealed_private_key=sealed)
    plain = a_tracker(run, b"\x03" * 28)
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.brands.add(brand)
        await uow.production_runs.add(run)
        await uow.trackers.add(one)
        await uow.trackers.add_many([two, plain])
        await uow.trackers.update(one.with_changes({"display_name": "renamed"}, T0))
        await uow.commit()
    async with factory() as uow:
        assert (await uow.trackers.get(one.id)).sealed_private_key == sealed
        page = await uow.trackers.list(TrackerFilter(), PageRequest())
        by_id = {t.id: t.sealed_private_key for t in page.items}
        assert by_id == {one.id: sealed, two.id: sealed, plain.id: None}


# -- tag keys --------------------------------------------------------------------------------


def a_batch(size: int = 1) -> KeyBatch:
    return KeyBatch(id=uuid.uuid4(), label="L", size=size, create_time=T0)


def a_generated(raw: bytes) -> GeneratedKey:
    return GeneratedKey(AdvertisementKey(raw), SealedSecret("k", b"sealed-" + raw[:4]))


def raw_key(n: int) -> bytes:
    return bytes([n]) * 28


async def test_tag_keys_follow_commit_and_rollback() -> None:
    factory = FakeUnitOfWorkFactory()
    batch = a_batch(2)
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(1))], first_seq=0)
    async with factory() as uow:
        with pytest.raises(NotFound):
            await uow.tag_keys.get_batch(batch.id)
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(1))], first_seq=0)
        await uow.commit()
    async with factory() as uow:
        assert await uow.tag_keys.get_batch(batch.id) == batch
        assert factory.committed.key_batches[batch.id].kek_id == "k"
        [(seq, key)] = await uow.tag_keys.batch_keys(batch.id, -1, 10)
        await uow.clients.add(client := a_client())
        await uow.tag_keys.allocate([key.id], client.id)
        by_mac = await uow.tag_keys.by_macs([key.mac_address.value])
        assert by_mac[key.mac_address.value].client_id == client.id
    async with factory() as uow:
        by_mac = await uow.tag_keys.by_macs([key.mac_address.value])
        assert by_mac[key.mac_address.value].client_id is None
    assert seq == 0


async def test_missing_key_batch_is_not_found_naming_kind_and_id() -> None:
    factory = FakeUnitOfWorkFactory()
    missing = uuid.uuid4()
    async with factory() as uow:
        with pytest.raises(NotFound) as exc:
            await uow.tag_keys.get_batch(missing)
        assert (exc.value.kind, exc.value.ident) == ("key batch", str(missing))
        assert await uow.tag_keys.batch_keys(missing, -1, 10) == []


async def test_keys_of_a_missing_batch_are_a_missing_parent() -> None:
    factory = FakeUnitOfWorkFactory()
    async with factory() as uow:
        with pytest.raises(NotFound) as exc:
            await uow.tag_keys.add_batch(a_batch(), [a_generated(raw_key(1))], first_seq=0)
        assert exc.value.kind == "parent of tag key"


async def test_batch_header_ids_are_unique() -> None:
    factory = FakeUnitOfWorkFactory()
    batch = a_batch()
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(batch, "k")
        with pytest.raises(AlreadyExists) as exc:
            await uow.tag_keys.add_batch_header(batch, "k")
        assert exc.value.field == "id"


async def test_tag_key_clashes_name_mac_before_key_and_store_nothing() -> None:
    factory = FakeUnitOfWorkFactory()
    first, second = a_batch(1), a_batch(3)
    taken = raw_key(1)
    same_mac = bytes([0xC1]) + taken[1:6] + b"\x99" * 22  # other key, same MAC
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(first, "k")
        await uow.tag_keys.add_batch_header(second, "k")
        await uow.tag_keys.add_batch(first, [a_generated(taken)], first_seq=0)
        for clash in (taken, same_mac):
            with pytest.raises(AlreadyExists) as exc:
                await uow.tag_keys.add_batch(
                    second, [a_generated(raw_key(2)), a_generated(clash)], first_seq=0
                )
            assert (exc.value.kind, exc.value.field) == ("tag key", "mac_address")
            assert exc.value.value == "C1:01:01:01:01:01"
        # Within one call, a later key clashes with an earlier one.
        with pytest.raises(AlreadyExists):
            await uow.tag_keys.add_batch(
                second, [a_generated(raw_key(2)), a_generated(raw_key(2))], first_seq=0
            )
        assert await uow.tag_keys.batch_keys(second.id, -1, 10) == []
        await uow.tag_keys.add_batch(second, [a_generated(raw_key(2))], first_seq=0)
        with pytest.raises(AlreadyExists) as exc:
            await uow.tag_keys.add_batch(second, [a_generated(raw_key(3))], first_seq=0)
        assert exc.value.field == "seq"


async def test_batch_keys_come_in_seq_order_after_a_seq_up_to_a_limit() -> None:
    factory = FakeUnitOfWorkFactory()
    batch, other = a_batch(6), a_batch(1)
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch_header(other, "k")
        # Chunks stored out of order; another batch's key in between.
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(n)) for n in (4, 5)], 4)
        await uow.tag_keys.add_batch(other, [a_generated(raw_key(9))], 0)
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(n)) for n in range(4)], 0)

        async def seqs(after: int, limit: int) -> list[tuple[int, bytes]]:
            rows = await uow.tag_keys.batch_keys(batch.id, after, limit)
            return [(seq, key.advertisement_key.value) for seq, key in rows]

        assert await seqs(-1, 100) == [(n, raw_key(n)) for n in range(6)]
        assert await seqs(-1, 2) == [(0, raw_key(0)), (1, raw_key(1))]
        assert await seqs(1, 3) == [(n, raw_key(n)) for n in (2, 3, 4)]
        assert await seqs(5, 3) == []
        [(_, key)] = await uow.tag_keys.batch_keys(other.id, -1, 100)
        assert key.batch_id == other.id
        assert key.sealed_private_key == a_generated(raw_key(9)).sealed_private_key


async def test_by_macs_returns_only_the_keys_found() -> None:
    factory = FakeUnitOfWorkFactory()
    batch = a_batch(2)
    keys = [a_generated(raw_key(n)) for n in (1, 2)]
    async with factory() as uow:
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, keys, 0)
        found = await uow.tag_keys.by_macs([keys[0].mac_address.value, "C0:00:00:00:00:00"])
        assert list(found) == [keys[0].mac_address.value]
        assert found[keys[0].mac_address.value].advertisement_key == keys[0].advertisement_key
        assert await uow.tag_keys.by_macs([]) == {}


async def test_allocation_sets_and_clears_the_client_and_ignores_unknown_ids() -> None:
    factory = FakeUnitOfWorkFactory()
    batch = a_batch(2)
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(n)) for n in (1, 2)], 0)
        rows = await uow.tag_keys.batch_keys(batch.id, -1, 10)
        first, second = (key for _, key in rows)

        async def owners() -> list[uuid.UUID | None]:
            return [key.client_id for _, key in await uow.tag_keys.batch_keys(batch.id, -1, 10)]

        await uow.tag_keys.allocate([first.id, uuid.uuid4()], client.id)
        assert await owners() == [client.id, None]
        with pytest.raises(NotFound) as exc:
            await uow.tag_keys.allocate([second.id], uuid.uuid4())
        assert exc.value.kind == "parent of tag key"
        assert await owners() == [client.id, None]
        await uow.tag_keys.allocate([first.id], None)
        assert await owners() == [None, None]


async def test_a_client_with_allocated_tags_is_deleted_only_cascading_releasing_them() -> None:
    # tag_keys.client_id REFERENCES clients without ON DELETE: a plain delete is refused; the
    # cascade returns the tags to the unallocated pool (as the Postgres adapter does).
    factory = FakeUnitOfWorkFactory()
    batch = a_batch()
    client = a_client()
    async with factory() as uow:
        await uow.clients.add(client)
        await uow.tag_keys.add_batch_header(batch, "k")
        await uow.tag_keys.add_batch(batch, [a_generated(raw_key(1))], 0)
        [(_, key)] = await uow.tag_keys.batch_keys(batch.id, -1, 1)
        await uow.tag_keys.allocate([key.id], client.id)
        with pytest.raises(FailedPrecondition):
            await uow.clients.delete(client.id, cascade=False)
        await uow.clients.delete(client.id, cascade=True)
        [(_, released)] = await uow.tag_keys.batch_keys(batch.id, -1, 1)
        assert released.client_id is None


# -- key pairs and sealing -------------------------------------------------------------------


def test_fake_key_pairs_are_deterministic_distinct_and_derivable() -> None:
    one, two = FakeKeyPairFactory(), FakeKeyPairFactory()
    pairs = [one.generate() for _ in range(50)]
    assert pairs == [two.generate() for _ in range(50)]
    assert len({private for private, _ in pairs}) == 50
    assert len({public.value for _, public in pairs}) == 50
    for private, public in pairs:
        assert len(private) == 28
        assert one.public_of(private) == public
    assert one.generated == pairs
    assert FakeKeyPairFactory(start=3).generate() == pairs[3]


@pytest.mark.parametrize("bad", [bytes(28), b"\xff" * 28, b"\x01" * 27, b"\x01" * 29, b""])
def test_fake_key_pair_factory_rejects_what_is_no_private_key(bad: bytes) -> None:
    with pytest.raises(InvalidArgument) as exc:
        FakeKeyPairFactory().public_of(bad)
    assert [v.field for v in exc.value.violations] == ["private_key"]


@given(plaintext=st.binary(max_size=100), context=st.binary(max_size=64))
def test_fake_sealer_round_trips_under_its_context(plaintext: bytes, context: bytes) -> None:
    sealer = FakeSealer()
    sealed = sealer.seal(plaintext, context)
    assert sealed.kek_id == sealer.active_kek_id == "fake"
    assert sealer.unseal(sealed, context) == plaintext
    with pytest.raises(ValueError, match="context"):
        sealer.unseal(sealed, context + b"x")


def test_fake_sealer_hides_the_plaintext_and_detects_tampering() -> None:
    sealer = FakeSealer()
    secret = b"\x00" * 28
    sealed = sealer.seal(secret, b"ctx")
    assert secret not in sealed.ciphertext
    assert sealed != sealer.seal(secret, b"other")
    flipped = sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1])
    for bad in (
        SealedSecret(sealed.kek_id, flipped),
        SealedSecret(sealed.kek_id, sealed.ciphertext[:-1]),
        SealedSecret("other", sealed.ciphertext),
    ):
        with pytest.raises(ValueError, match="KEK"):
            sealer.unseal(bad, b"ctx")
    with pytest.raises(ValueError, match="does not open"):
        FakeSealer(key=b"another").unseal(sealed, b"ctx")
    assert sealer.seals == 2


# -- trackers by hashed key ------------------------------------------------------------------


async def test_by_hashed_keys_returns_only_the_trackers_found_including_uncommitted() -> None:
    factory = FakeUnitOfWorkFactory()
    a, b = await two_clients_with_everything(factory)
    async with factory() as uow:
        page = await uow.trackers.list(TrackerFilter(), PageRequest())
        one, two = sorted(page.items, key=lambda t: t.client_id == b.id)
        assert one.client_id == a.id
        found = await uow.trackers.by_hashed_keys(
            [one.hashed_advertisement_key, b"\x00" * 32, one.hashed_advertisement_key]
        )
        assert found == {one.hashed_advertisement_key: one}
        # Not narrowed to any client: the use case decides what the caller may see.
        both = await uow.trackers.by_hashed_keys(
            [two.hashed_advertisement_key, one.hashed_advertisement_key]
        )
        assert both == {one.hashed_advertisement_key: one, two.hashed_advertisement_key: two}
        assert await uow.trackers.by_hashed_keys([]) == {}
        # The raw advertisement key is not its hash.
        assert await uow.trackers.by_hashed_keys([one.advertisement_key.value]) == {}
        run = await uow.production_runs.get(one.production_run_id)
        await uow.trackers.add(fresh := a_tracker(run, b"\x07" * 28))
        found = await uow.trackers.by_hashed_keys([fresh.hashed_advertisement_key])
        assert found == {fresh.hashed_advertisement_key: fresh}
    async with factory() as uow:
        assert await uow.trackers.by_hashed_keys([fresh.hashed_advertisement_key]) == {}


# -- reports ---------------------------------------------------------------------------------


def a_report(
    tracker_id: uuid.UUID,
    minute: int = 0,
    lat: float = 52.5,
    lon: float = 13.4,
    **kw: Any,
) -> Report:
    fields: dict[str, Any] = dict(
        tracker_id=tracker_id,
        report_time=T0 + timedelta(minutes=minute),
        position=GeoPoint(lat, lon),
        confidence=2,
        horizontal_accuracy_m=25,
    )
    fields.update(kw)
    return Report(**fields)


def reports_of(uow: FakeUnitOfWork) -> FakeReportRepository:
    assert isinstance(uow.reports, FakeReportRepository)
    return uow.reports


async def test_reports_are_stored_once_and_add_many_counts_the_new_ones() -> None:
    factory = FakeUnitOfWorkFactory()
    tracker, other = uuid.uuid4(), uuid.uuid4()
    first = [a_report(tracker, n) for n in range(3)]
    async with factory() as uow:
        repo = reports_of(uow)
        assert await repo.add_many([]) == 0
        assert await repo.add_many(first) == 3
        assert await repo.add_many(first) == 0
        # Repeats within one call and against stored ones are not new.
        assert await repo.add_many([first[1], a_report(tracker, 3), a_report(tracker, 3)]) == 1
        assert await repo.add_many([a_report(other, 0)]) == 1
        assert (await repo.count(tracker), await repo.count(other)) == (4, 1)
        assert await repo.count(uuid.uuid4()) == 0


async def test_a_report_is_the_same_by_tracker_time_and_position_and_the_first_wins() -> None:
    factory = FakeUnitOfWorkFactory()
    tracker = uuid.uuid4()
    stored = a_report(tracker, confidence=1, source="findmy")
    plus_two = timezone(timedelta(hours=2))
    same = [
        a_report(tracker, confidence=3, horizontal_accuracy_m=5, status=7, source="push"),
        a_report(tracker, published_time=T0),
        # The same instant in another zone; the position to 1e-7 degree.
        a_report(tracker, report_time=T0.astimezone(plus_two)),
        a_report(tracker, lat=52.5 + 4e-8, lon=13.4 - 4e-8),
    ]
    different = [
        a_report(uuid.uuid4()),
        a_report(tracker, report_time=T0 + timedelta(microseconds=1)),
        a_report(tracker, lat=52.5 + 1e-7),
        a_report(tracker, lon=13.4 - 1e-7),
    ]
    async with factory() as uow:
        repo = reports_of(uow)
        assert await repo.add_many([stored]) == 1
        assert await repo.add_many(same) == 0
        assert await repo.add_many(different) == len(different)
        await uow.commit()
    assert factory.committed.reports[stored.identity] == stored


async def test_reports_follow_commit_and_rollback() -> None:
    factory = FakeUnitOfWorkFactory()
    tracker = uuid.uuid4()
    async with factory() as uow:
        assert await reports_of(uow).add_many([a_report(tracker, 0)]) == 1
    async with factory() as uow:
        # Rolled back: new again.
        assert await reports_of(uow).count(tracker) == 0
        assert await reports_of(uow).add_many([a_report(tracker, 0)]) == 1
        async with factory() as other:
            assert await reports_of(other).count(tracker) == 0
        await uow.commit()
    async with factory() as uow:
        assert await reports_of(uow).count(tracker) == 1
        assert await reports_of(uow).add_many([a_report(tracker, 0), a_report(tracker, 1)]) == 1
    assert list(factory.committed.reports) == [a_report(tracker, 0).identity]
    with pytest.raises(RuntimeError):
        await reports_of(uow).count(tracker)
