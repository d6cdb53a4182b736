"""Who may do what: setup use cases by role, sign-in and tokens, and managing users.

Callers: ADMIN, CLIENT_ADMIN of A, VIEWER of A, CLIENT_ADMIN of B and a user without
memberships, against resources of client A. A resource the caller may not read must look
exactly like a missing one: same exception, kind and message (up to the id asked for).
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.access import Principal, Role, User
from domain.errors import (
    AlreadyExists,
    DomainError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from domain.model import (
    Brand,
    Client,
    GeoPoint,
    Location,
    LocationKind,
    ProductionRun,
    Tracker,
)
from domain.pagination import PageRequest
from domain.ports.setup import (
    BrandFilter,
    ClientFilter,
    LocationFilter,
    ProductionRunFilter,
    TrackerFilter,
)
from servers.parts import access_usecases, setup_usecases
from tests.unit.fakes.access import FakePasswordHasher, FakeTokenCodec
from tests.unit.fakes.base import FakeClock, FakeTables
from tests.unit.fakes.common import FakeUnitOfWorkFactory
from usecases.access import BAD_LOGIN, AccessUseCases, NewUser, TokenPolicy
from usecases.setup import (
    NewBrand,
    NewClient,
    NewLocation,
    NewProductionRun,
    NewTracker,
    SetupUseCases,
)

START = datetime(2025, 3, 1, tzinfo=UTC)
END = START + timedelta(days=90)
SYSTEM = Principal.system()
POLICY = TokenPolicy(access_ttl=timedelta(minutes=15), refresh_ttl=timedelta(days=30))
PASSWORD = "correct horse battery staple"


def key(n: int) -> bytes:
    return hashlib.sha256(f"key-{n}".encode()).digest()[:28]


@dataclass
class Tree:
    """One client's setup: a brand with two runs, a location and a tracker in the first."""

    client: Client
    brand: Brand
    run: ProductionRun
    run2: ProductionRun
    location: Location
    tracker: Tracker


@dataclass
class World:
    setup: SetupUseCases
    access: AccessUseCases
    uow: FakeUnitOfWorkFactory
    clock: FakeClock
    hasher: FakePasswordHasher
    codec: FakeTokenCodec
    a: Tree
    b: Tree
    keys_used: int = 0

    def next_key(self) -> bytes:
        self.keys_used += 1
        return key(self.keys_used)

    async def tree(self, name: str) -> Tree:
        s = self.setup
        client = await s.create_client(SYSTEM, NewClient(name))
        brand = await s.create_brand(SYSTEM, NewBrand(client.id, f"{name} brand"))
        run = await s.create_production_run(SYSTEM, NewProductionRun(brand.id, "R1", START, END))
        run2 = await s.create_production_run(SYSTEM, NewProductionRun(brand.id, "R2", START, END))
        location = await s.create_location(
            SYSTEM, NewLocation(run.id, LocationKind.DELIVERY, "Shop", GeoPoint(48.1, 11.6), 50.0)
        )
        tracker = await s.create_tracker(SYSTEM, NewTracker(run.id, self.next_key()))
        return Tree(client, brand, run, run2, location, tracker)

    def snapshot(self) -> tuple[FakeTables, int]:
        return self.uow.committed.copy(), self.uow.commits


async def make_world() -> World:
    uow, clock, hasher = FakeUnitOfWorkFactory(), FakeClock(START), FakePasswordHasher()
    codec = FakeTokenCodec(clock)
    w = World(
        setup_usecases(uow, clock),
        access_usecases(uow, hasher, codec, clock, POLICY),
        uow,
        clock,
        hasher,
        codec,
        a=None,  # type: ignore[arg-type]
        b=None,  # type: ignore[arg-type]
    )
    w.a = await w.tree("A")
    w.b = await w.tree("B")
    return w


@pytest.fixture
async def w() -> World:
    return await make_world()


CALLERS: dict[str, Callable[[World], Principal]] = {
    "admin": lambda w: Principal(uuid.uuid4(), admin=True),
    "client_admin_a": lambda w: Principal(
        uuid.uuid4(), memberships={w.a.client.id: Role.CLIENT_ADMIN}
    ),
    "viewer_a": lambda w: Principal(uuid.uuid4(), memberships={w.a.client.id: Role.VIEWER}),
    "client_admin_b": lambda w: Principal(
        uuid.uuid4(), memberships={w.b.client.id: Role.CLIENT_ADMIN}
    ),
    "nobody": lambda w: Principal(uuid.uuid4()),
}

OK, DENIED, HIDDEN = "ok", "PermissionDenied", "NotFound"

# What each kind of operation gives each caller, for a resource of client A.
EXPECTED: dict[str, dict[str, str]] = {
    "read": {
        "admin": OK,
        "client_admin_a": OK,
        "viewer_a": OK,
        "client_admin_b": HIDDEN,
        "nobody": HIDDEN,
    },
    "manage": {
        "admin": OK,
        "client_admin_a": OK,
        "viewer_a": DENIED,
        "client_admin_b": HIDDEN,
        "nobody": HIDDEN,
    },
    "admin": {
        "admin": OK,
        "client_admin_a": DENIED,
        "viewer_a": DENIED,
        "client_admin_b": DENIED,
        "nobody": DENIED,
    },
    # Deleting a client needs ADMIN, but a client one cannot see is still hidden.
    "admin_delete": {
        "admin": OK,
        "client_admin_a": DENIED,
        "viewer_a": DENIED,
        "client_admin_b": HIDDEN,
        "nobody": HIDDEN,
    },
}

Call = Callable[[World, Principal, uuid.UUID], Awaitable[Any]]


@dataclass(frozen=True)
class Op:
    """A use-case call whose access hinges on ``target`` (an id of client A's resource)."""

    rule: str
    call: Call
    target: Callable[[World], uuid.UUID]
    writes: bool


def _new_location(run_id: uuid.UUID) -> NewLocation:
    return NewLocation(run_id, LocationKind.STORAGE, "Depot", GeoPoint(1.0, 2.0), 10.0)


OPS: dict[str, Op] = {
    "create_client": Op(
        "admin",
        lambda w, c, t: w.setup.create_client(c, NewClient("New")),
        lambda w: w.a.client.id,
        True,
    ),
    "get_client": Op(
        "read", lambda w, c, t: w.setup.get_client(c, t), lambda w: w.a.client.id, False
    ),
    "update_client": Op(
        "manage",
        lambda w, c, t: w.setup.update_client(c, t, {"display_name": "A2"}),
        lambda w: w.a.client.id,
        True,
    ),
    "delete_client": Op(
        "admin_delete",
        lambda w, c, t: w.setup.delete_client(c, t, force=True),
        lambda w: w.a.client.id,
        True,
    ),
    "create_brand": Op(
        "manage",
        lambda w, c, t: w.setup.create_brand(c, NewBrand(t, "Brand 2")),
        lambda w: w.a.client.id,
        True,
    ),
    "get_brand": Op("read", lambda w, c, t: w.setup.get_brand(c, t), lambda w: w.a.brand.id, False),
    "update_brand": Op(
        "manage",
        lambda w, c, t: w.setup.update_brand(c, t, {"display_name": "B2"}),
        lambda w: w.a.brand.id,
        True,
    ),
    "delete_brand": Op(
        "manage",
        lambda w, c, t: w.setup.delete_brand(c, t, force=True),
        lambda w: w.a.brand.id,
        True,
    ),
    "create_production_run": Op(
        "manage",
        lambda w, c, t: w.setup.create_production_run(c, NewProductionRun(t, "R3", START, END)),
        lambda w: w.a.brand.id,
        True,
    ),
    "get_production_run": Op(
        "read", lambda w, c, t: w.setup.get_production_run(c, t), lambda w: w.a.run.id, False
    ),
    "update_production_run": Op(
        "manage",
        lambda w, c, t: w.setup.update_production_run(c, t, {"end_time": END + timedelta(days=1)}),
        lambda w: w.a.run.id,
        True,
    ),
    "delete_production_run": Op(
        "manage",
        lambda w, c, t: w.setup.delete_production_run(c, t, force=True),
        lambda w: w.a.run.id,
        True,
    ),
    "create_location": Op(
        "manage",
        lambda w, c, t: w.setup.create_location(c, _new_location(t)),
        lambda w: w.a.run.id,
        True,
    ),
    "get_location": Op(
        "read", lambda w, c, t: w.setup.get_location(c, t), lambda w: w.a.location.id, False
    ),
    "update_location": Op(
        "manage",
        lambda w, c, t: w.setup.update_location(c, t, {"radius_m": 99.0}),
        lambda w: w.a.location.id,
        True,
    ),
    "delete_location": Op(
        "manage",
        lambda w, c, t: w.setup.delete_location(c, t),
        lambda w: w.a.location.id,
        True,
    ),
    "create_tracker": Op(
        "manage",
        lambda w, c, t: w.setup.create_tracker(c, NewTracker(t, w.next_key())),
        lambda w: w.a.run.id,
        True,
    ),
    "create_trackers": Op(
        "manage",
        lambda w, c, t: w.setup.create_trackers(
            c, [NewTracker(t, w.next_key()), NewTracker(t, w.next_key())]
        ),
        lambda w: w.a.run.id,
        True,
    ),
    "get_tracker": Op(
        "read", lambda w, c, t: w.setup.get_tracker(c, t), lambda w: w.a.tracker.id, False
    ),
    "update_tracker": Op(
        "manage",
        lambda w, c, t: w.setup.update_tracker(c, t, {"display_name": "Pallet 9"}),
        lambda w: w.a.tracker.id,
        True,
    ),
    "move_tracker": Op(
        "manage",
        lambda w, c, t: w.setup.update_tracker(c, t, {"production_run_id": w.a.run2.id}),
        lambda w: w.a.tracker.id,
        True,
    ),
    "delete_tracker": Op(
        "manage",
        lambda w, c, t: w.setup.delete_tracker(c, t),
        lambda w: w.a.tracker.id,
        True,
    ),
}

MATRIX = [
    pytest.param(op, caller, EXPECTED[OPS[op].rule][caller], id=f"{op}-{caller}")
    for op in OPS
    for caller in CALLERS
]


def assert_same_not_found(
    hidden: NotFound, hidden_id: uuid.UUID, missing: NotFound, missing_id: uuid.UUID
) -> None:
    """Nothing but the id asked for tells a hidden resource from a missing one."""
    assert type(hidden) is type(missing)
    assert hidden.kind == missing.kind
    assert (hidden.ident, missing.ident) == (str(hidden_id), str(missing_id))
    assert str(hidden).replace(str(hidden_id), "<id>") == str(missing).replace(
        str(missing_id), "<id>"
    )
    assert hidden.args[0].replace(str(hidden_id), "<id>") == missing.args[0].replace(
        str(missing_id), "<id>"
    )


async def outcome(call: Awaitable[Any]) -> str | DomainError:
    try:
        await call
    except (PermissionDenied, NotFound) as err:
        return err
    return OK


# -- setup use cases: the matrix -------------------------------------------------------------


@pytest.mark.parametrize(("op_name", "caller_name", "expected"), MATRIX)
async def test_setup_use_case_outcome_by_role(
    w: World, op_name: str, caller_name: str, expected: str
) -> None:
    op, caller = OPS[op_name], CALLERS[caller_name](w)
    target = op.target(w)
    before, commits = w.snapshot()

    result = await outcome(op.call(w, caller, target))

    if expected == OK:
        assert result == OK
        assert w.uow.commits == commits + (1 if op.writes else 0)
        return
    assert type(result).__name__ == expected, result
    # A refused call changes nothing.
    assert (w.uow.committed, w.uow.commits) == (before, commits)
    if expected == HIDDEN:
        assert isinstance(result, NotFound)
        missing_id = uuid.uuid4()
        with pytest.raises(NotFound) as missing:
            await op.call(w, caller, missing_id)
        assert_same_not_found(result, target, missing.value, missing_id)
        # And the same as an administrator asking for a missing id.
        with pytest.raises(NotFound) as admin_missing:
            await op.call(w, SYSTEM, missing_id)
        assert_same_not_found(result, target, admin_missing.value, missing_id)
    else:
        assert isinstance(result, PermissionDenied)
        assert "ADMIN" in str(result)


async def test_viewer_asking_about_a_missing_resource_gets_not_found(w: World) -> None:
    viewer = CALLERS["viewer_a"](w)
    with pytest.raises(NotFound):
        await w.setup.update_brand(viewer, uuid.uuid4(), {"display_name": "X"})


async def test_client_admin_moving_a_tracker_to_a_hidden_run_sees_not_found(w: World) -> None:
    caller = CALLERS["client_admin_a"](w)
    before = w.snapshot()
    with pytest.raises(NotFound) as hidden:
        await w.setup.update_tracker(caller, w.a.tracker.id, {"production_run_id": w.b.run.id})
    missing_id = uuid.uuid4()
    with pytest.raises(NotFound) as missing:
        await w.setup.update_tracker(caller, w.a.tracker.id, {"production_run_id": missing_id})
    assert_same_not_found(hidden.value, w.b.run.id, missing.value, missing_id)
    assert w.snapshot() == before


async def test_moving_a_tracker_to_a_run_one_only_views_is_denied(w: World) -> None:
    caller = Principal(
        uuid.uuid4(), memberships={w.a.client.id: Role.CLIENT_ADMIN, w.b.client.id: Role.VIEWER}
    )
    with pytest.raises(PermissionDenied):
        await w.setup.update_tracker(caller, w.a.tracker.id, {"production_run_id": w.b.run.id})


async def test_batch_with_one_run_of_a_hidden_client_stores_nothing(w: World) -> None:
    caller = CALLERS["client_admin_a"](w)
    before = w.snapshot()
    with pytest.raises(NotFound) as exc:
        await w.setup.create_trackers(
            caller, [NewTracker(w.a.run.id, key(901)), NewTracker(w.b.run.id, key(902))]
        )
    assert (exc.value.kind, exc.value.ident) == ("production run", str(w.b.run.id))
    assert w.snapshot() == before


async def test_client_admin_of_two_clients_manages_both(w: World) -> None:
    caller = Principal(
        uuid.uuid4(),
        memberships={w.a.client.id: Role.CLIENT_ADMIN, w.b.client.id: Role.CLIENT_ADMIN},
    )
    await w.setup.update_brand(caller, w.a.brand.id, {"display_name": "A'"})
    await w.setup.update_brand(caller, w.b.brand.id, {"display_name": "B'"})
    with pytest.raises(PermissionDenied):
        await w.setup.delete_client(caller, w.a.client.id)


# -- setup use cases: lists ------------------------------------------------------------------

LISTS: dict[str, Any] = {
    "list_clients": ClientFilter,
    "list_brands": BrandFilter,
    "list_production_runs": ProductionRunFilter,
    "list_locations": LocationFilter,
    "list_trackers": TrackerFilter,
}
VISIBLE = {
    "admin": "ab",
    "client_admin_a": "a",
    "viewer_a": "a",
    "client_admin_b": "b",
    "nobody": "",
}


def test_matrix_and_list_tests_cover_every_setup_use_case() -> None:
    use_cases = {f.name for f in dataclasses.fields(SetupUseCases)}
    assert use_cases - set(OPS) - set(LISTS) == set()


@pytest.mark.parametrize("caller_name", CALLERS)
@pytest.mark.parametrize("list_name", LISTS)
async def test_lists_return_only_rows_of_the_callers_clients(
    w: World, list_name: str, caller_name: str
) -> None:
    caller = CALLERS[caller_name](w)
    page = await getattr(w.setup, list_name)(caller, LISTS[list_name](), PageRequest(size=1000))
    expected = {getattr(w, name).client.id for name in VISIBLE[caller_name]}
    assert {e.owner_client_id for e in page.items} == expected
    if expected:
        assert page.items


@pytest.mark.parametrize("list_name", LISTS)
async def test_a_filter_cannot_widen_what_the_caller_sees(w: World, list_name: str) -> None:
    caller = CALLERS["viewer_a"](w)
    wide = LISTS[list_name](visible_clients=None)
    page = await getattr(w.setup, list_name)(caller, wide, PageRequest(size=1000))
    assert {e.owner_client_id for e in page.items} == {w.a.client.id}


async def test_filtering_by_another_clients_id_lists_nothing(w: World) -> None:
    caller = CALLERS["client_admin_a"](w)
    every = PageRequest(size=1000)
    b = w.b.client.id
    assert (await w.setup.list_brands(caller, BrandFilter(client_id=b), every)).items == []
    assert (await w.setup.list_trackers(caller, TrackerFilter(client_id=b), every)).items == []
    runs = await w.setup.list_production_runs(
        caller, ProductionRunFilter(brand_id=w.b.brand.id), every
    )
    assert runs.items == []
    locations = await w.setup.list_locations(
        caller, LocationFilter(production_run_id=w.b.run.id), every
    )
    assert locations.items == []


async def test_paging_a_narrowed_list_walks_only_visible_rows(w: World) -> None:
    for n in range(7):
        await w.setup.create_tracker(SYSTEM, NewTracker(w.a.run.id, key(500 + n)))
        await w.setup.create_tracker(SYSTEM, NewTracker(w.b.run.id, key(600 + n)))
    caller = CALLERS["viewer_a"](w)
    seen: list[Tracker] = []
    after = None
    while True:
        page = await w.setup.list_trackers(caller, TrackerFilter(), PageRequest(3, after))
        seen += page.items
        if page.next_after is None:
            break
        after = page.next_after
    assert len(seen) == 8
    assert {t.client_id for t in seen} == {w.a.client.id}
    assert [str(t.id) for t in seen] == sorted(str(t.id) for t in seen)


# -- users: a world with stored users --------------------------------------------------------


@dataclass
class People:
    root: User  # ADMIN, no memberships
    ada: User  # ADMIN with a membership in A
    alice: User  # CLIENT_ADMIN of A
    victor: User  # VIEWER of A
    carol: User  # VIEWER of A and B
    bob: User  # CLIENT_ADMIN of B
    nora: User  # no memberships


async def add_people(w: World) -> People:
    a, b = w.a.client.id, w.b.client.id

    async def user(name: str, admin: bool = False, **roles: Role) -> User:
        memberships = {{"a": a, "b": b}[c]: r for c, r in roles.items()}
        return await w.access.create_user(
            SYSTEM, NewUser(f"{name}@example.com", PASSWORD, name.title(), admin, memberships)
        )

    return People(
        root=await user("root", admin=True),
        ada=await user("ada", admin=True, a=Role.VIEWER),
        alice=await user("alice", a=Role.CLIENT_ADMIN),
        victor=await user("victor", a=Role.VIEWER),
        carol=await user("carol", a=Role.VIEWER, b=Role.VIEWER),
        bob=await user("bob", b=Role.CLIENT_ADMIN),
        nora=await user("nora"),
    )


@pytest.fixture
async def p(w: World) -> People:
    return await add_people(w)


def refresh_tokens_of(w: World, user: User) -> list[Any]:
    return [t for t in w.uow.committed.refresh_tokens.values() if t.user_id == user.id]


# -- Login -----------------------------------------------------------------------------------


async def test_login_issues_an_access_token_for_the_user_and_stores_the_refresh_hash(
    w: World, p: People
) -> None:
    pair = await w.access.login("alice@example.com", PASSWORD)
    claims = w.codec.decode(pair.access_token)
    assert (claims.user_id, claims.kind) == (p.alice.id, "access")
    assert claims.expires_at == pair.access_expires_at == START + timedelta(minutes=15)
    assert pair.refresh_expires_at == START + timedelta(days=30)
    (stored,) = refresh_tokens_of(w, p.alice)
    assert stored.token_hash == hashlib.sha256(pair.refresh_token.encode()).digest()
    assert pair.refresh_token.encode() not in stored.token_hash
    assert await w.access.authenticate(pair.access_token) == p.alice.principal()


@pytest.mark.parametrize("email", ["ALICE@Example.com", "  alice@EXAMPLE.COM "])
async def test_login_email_is_case_insensitive(w: World, p: People, email: str) -> None:
    pair = await w.access.login(email, PASSWORD)
    assert w.codec.decode(pair.access_token).user_id == p.alice.id


async def test_wrong_password_unknown_email_and_garbage_look_the_same(w: World, p: People) -> None:
    before = w.snapshot()
    errors = []
    for email, password in [
        ("alice@example.com", PASSWORD + "!"),
        ("nobody@example.com", PASSWORD),
        ("not an email", PASSWORD),
    ]:
        verified = w.hasher.verified
        with pytest.raises(Unauthenticated) as exc:
            await w.access.login(email, password)
        errors.append((type(exc.value), str(exc.value)))
        if "@" in email:
            # An unknown email costs a hash check too, so timing does not tell it apart.
            assert w.hasher.verified == verified + 1
    assert errors == [(Unauthenticated, BAD_LOGIN)] * 3
    assert w.snapshot() == before


# -- RefreshTokens ---------------------------------------------------------------------------


async def test_refresh_rotates_the_refresh_token(w: World, p: People) -> None:
    first = await w.access.login("victor@example.com", PASSWORD)
    w.clock.advance(timedelta(minutes=20))
    second = await w.access.refresh_tokens(first.refresh_token)
    assert second.refresh_token != first.refresh_token
    assert second.access_expires_at == w.clock.now() + timedelta(minutes=15)
    assert (await w.access.authenticate(second.access_token)).user_id == p.victor.id
    third = await w.access.refresh_tokens(second.refresh_token)
    assert third.refresh_token not in {first.refresh_token, second.refresh_token}
    tokens = refresh_tokens_of(w, p.victor)
    assert sorted(t.revoked for t in tokens) == [False, True, True]


async def test_reusing_a_spent_refresh_token_revokes_every_token_of_the_user(
    w: World, p: People
) -> None:
    other_session = await w.access.login("victor@example.com", PASSWORD)
    stolen = await w.access.login("victor@example.com", PASSWORD)
    fresh = await w.access.refresh_tokens(stolen.refresh_token)
    someone_else = await w.access.login("alice@example.com", PASSWORD)

    with pytest.raises(Unauthenticated):
        await w.access.refresh_tokens(stolen.refresh_token)

    for spent in (fresh.refresh_token, other_session.refresh_token):
        with pytest.raises(Unauthenticated):
            await w.access.refresh_tokens(spent)
    assert all(t.revoked for t in refresh_tokens_of(w, p.victor))
    await w.access.refresh_tokens(someone_else.refresh_token)


async def test_expired_refresh_token_is_refused(w: World, p: People) -> None:
    pair = await w.access.login("victor@example.com", PASSWORD)
    w.clock.set(pair.refresh_expires_at)
    with pytest.raises(Unauthenticated):
        await w.access.refresh_tokens(pair.refresh_token)


async def test_refresh_token_just_before_expiry_works(w: World, p: People) -> None:
    pair = await w.access.login("victor@example.com", PASSWORD)
    w.clock.set(pair.refresh_expires_at - timedelta(seconds=1))
    await w.access.refresh_tokens(pair.refresh_token)


@pytest.mark.parametrize("token", ["", "made-up", "x" * 43])
async def test_unknown_refresh_token_is_refused(w: World, p: People, token: str) -> None:
    with pytest.raises(Unauthenticated):
        await w.access.refresh_tokens(token)


async def test_refresh_token_of_a_deleted_user_is_refused(w: World, p: People) -> None:
    pair = await w.access.login("victor@example.com", PASSWORD)
    await w.access.delete_user(SYSTEM, p.victor.id)
    with pytest.raises(Unauthenticated):
        await w.access.refresh_tokens(pair.refresh_token)


# -- Authenticate and service tokens ---------------------------------------------------------


async def test_authenticate_refuses_a_token_of_a_deleted_user(w: World, p: People) -> None:
    pair = await w.access.login("victor@example.com", PASSWORD)
    await w.access.delete_user(SYSTEM, p.victor.id)
    with pytest.raises(Unauthenticated):
        await w.access.authenticate(pair.access_token)


async def test_authenticate_refuses_expired_and_tampered_tokens(w: World, p: People) -> None:
    pair = await w.access.login("victor@example.com", PASSWORD)
    with pytest.raises(Unauthenticated):
        await w.access.authenticate(pair.access_token + "0")
    w.clock.set(pair.access_expires_at)
    with pytest.raises(Unauthenticated):
        await w.access.authenticate(pair.access_token)


async def test_authenticate_sees_memberships_as_they_are_now(w: World, p: People) -> None:
    pair = await w.access.login("victor@example.com", PASSWORD)
    await w.access.set_client_access(SYSTEM, p.victor.id, w.b.client.id, Role.CLIENT_ADMIN)
    caller = await w.access.authenticate(pair.access_token)
    assert dict(caller.memberships) == {
        w.a.client.id: Role.VIEWER,
        w.b.client.id: Role.CLIENT_ADMIN,
    }


async def test_admin_mints_a_service_token_that_authenticates(w: World, p: People) -> None:
    token, user = await w.access.mint_service_token(SYSTEM, "Bob@Example.com", timedelta(days=365))
    assert user == p.bob
    claims = w.codec.decode(token)
    assert (claims.kind, claims.expires_at) == ("service", START + timedelta(days=365))
    assert (await w.access.authenticate(token)).user_id == p.bob.id


async def test_only_an_admin_mints_service_tokens(w: World, p: People) -> None:
    with pytest.raises(PermissionDenied):
        await w.access.mint_service_token(p.alice.principal(), "victor@example.com", timedelta(1))
    with pytest.raises(InvalidArgument):
        await w.access.mint_service_token(SYSTEM, "victor@example.com", timedelta(0))
    with pytest.raises(NotFound):
        await w.access.mint_service_token(SYSTEM, "ghost@example.com", timedelta(1))


# -- CreateUser ------------------------------------------------------------------------------


async def test_created_user_can_log_in_and_only_a_hash_is_stored(w: World, p: People) -> None:
    user = await w.access.create_user(
        p.alice.principal(),
        NewUser(
            "New.Viewer@Example.com",
            "a fresh long password",
            memberships={w.a.client.id: Role.VIEWER},
        ),
    )
    assert user.email == "new.viewer@example.com"
    assert w.uow.committed.users[user.id] == user
    assert "a fresh long password" not in user.password_hash
    pair = await w.access.login("new.viewer@example.com", "a fresh long password")
    assert (await w.access.authenticate(pair.access_token)).memberships == {
        w.a.client.id: Role.VIEWER
    }


@pytest.mark.parametrize("role", list(Role))
async def test_client_admin_creates_users_of_their_client(w: World, p: People, role: Role) -> None:
    user = await w.access.create_user(
        p.alice.principal(), NewUser("n@example.com", PASSWORD, memberships={w.a.client.id: role})
    )
    assert dict(user.memberships) == {w.a.client.id: role}


async def test_client_admin_cannot_create_a_user_for_another_client(w: World, p: People) -> None:
    alice = p.alice.principal()
    before = w.snapshot()
    hidden_id, missing_id = w.b.client.id, uuid.uuid4()
    errors = []
    for client_id in (hidden_id, missing_id):
        with pytest.raises(NotFound) as exc:
            await w.access.create_user(
                alice,
                NewUser(
                    "n@example.com",
                    PASSWORD,
                    memberships={w.a.client.id: Role.VIEWER, client_id: Role.VIEWER},
                ),
            )
        errors.append(exc.value)
    assert_same_not_found(errors[0], hidden_id, errors[1], missing_id)
    assert w.snapshot() == before


async def test_client_admin_cannot_create_an_admin(w: World, p: People) -> None:
    with pytest.raises(PermissionDenied):
        await w.access.create_user(
            p.alice.principal(),
            NewUser(
                "n@example.com", PASSWORD, admin=True, memberships={w.a.client.id: Role.VIEWER}
            ),
        )


async def test_non_admin_must_give_a_new_user_a_client(w: World, p: People) -> None:
    with pytest.raises(InvalidArgument) as exc:
        await w.access.create_user(p.alice.principal(), NewUser("n@example.com", PASSWORD))
    assert [v.field for v in exc.value.violations] == ["memberships"]


@pytest.mark.parametrize("who", ["victor", "carol", "nora"])
async def test_viewers_and_outsiders_cannot_create_users(w: World, p: People, who: str) -> None:
    caller = getattr(p, who).principal()
    before = w.snapshot()
    new = NewUser("n@example.com", PASSWORD, memberships={w.a.client.id: Role.VIEWER})
    with pytest.raises(PermissionDenied if who != "nora" else NotFound):
        await w.access.create_user(caller, new)
    assert w.snapshot() == before


async def test_admin_creates_admins_and_users_without_clients(w: World, p: People) -> None:
    admin = await w.access.create_user(SYSTEM, NewUser("boss@example.com", PASSWORD, admin=True))
    assert admin.admin
    lonely = await w.access.create_user(p.root.principal(), NewUser("l@example.com", PASSWORD))
    assert dict(lonely.memberships) == {}


async def test_email_is_unique_whatever_its_case(w: World, p: People) -> None:
    with pytest.raises(AlreadyExists) as exc:
        await w.access.create_user(SYSTEM, NewUser("VICTOR@example.com", PASSWORD))
    assert (exc.value.kind, exc.value.field) == ("user", "email")


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [("not-an-email", PASSWORD, "email"), ("n@example.com", "short", "password")],
)
async def test_create_user_validates_email_and_password(
    w: World, p: People, email: str, password: str, field: str
) -> None:
    before = w.snapshot()
    with pytest.raises(InvalidArgument) as exc:
        await w.access.create_user(SYSTEM, NewUser(email, password))
    assert [v.field for v in exc.value.violations] == [field]
    assert w.snapshot() == before


# -- SetClientAccess -------------------------------------------------------------------------


async def test_client_admin_changes_and_revokes_access_to_their_client(w: World, p: People) -> None:
    alice, a = p.alice.principal(), w.a.client.id
    promoted = await w.access.set_client_access(alice, p.victor.id, a, Role.CLIENT_ADMIN)
    assert dict(promoted.memberships) == {a: Role.CLIENT_ADMIN}
    assert w.uow.committed.users[p.victor.id] == promoted
    revoked = await w.access.set_client_access(alice, p.carol.id, a, None)
    # Carol keeps B, which Alice is not told about.
    assert dict(w.uow.committed.users[p.carol.id].memberships) == {w.b.client.id: Role.VIEWER}
    assert dict(revoked.memberships) == {}


async def test_client_admin_cannot_grant_access_to_another_client(w: World, p: People) -> None:
    alice = p.alice.principal()
    missing_id = uuid.uuid4()
    with pytest.raises(NotFound) as hidden:
        await w.access.set_client_access(alice, p.victor.id, w.b.client.id, Role.VIEWER)
    with pytest.raises(NotFound) as missing:
        await w.access.set_client_access(alice, p.victor.id, missing_id, Role.VIEWER)
    assert_same_not_found(hidden.value, w.b.client.id, missing.value, missing_id)


async def test_client_admin_cannot_reach_users_they_cannot_see(w: World, p: People) -> None:
    alice, a = p.alice.principal(), w.a.client.id
    before = w.snapshot()
    missing_id = uuid.uuid4()
    with pytest.raises(NotFound) as hidden:
        await w.access.set_client_access(alice, p.bob.id, a, Role.VIEWER)
    with pytest.raises(NotFound) as missing:
        await w.access.set_client_access(alice, missing_id, a, Role.VIEWER)
    assert_same_not_found(hidden.value, p.bob.id, missing.value, missing_id)
    assert w.snapshot() == before


async def test_viewer_cannot_set_access(w: World, p: People) -> None:
    with pytest.raises(PermissionDenied):
        await w.access.set_client_access(
            p.victor.principal(), p.victor.id, w.a.client.id, Role.CLIENT_ADMIN
        )


async def test_admin_grants_access_to_anyone(w: World, p: People) -> None:
    nora = await w.access.set_client_access(SYSTEM, p.nora.id, w.b.client.id, Role.VIEWER)
    assert dict(nora.memberships) == {w.b.client.id: Role.VIEWER}


# -- SetPassword -----------------------------------------------------------------------------


async def test_users_change_their_own_password_and_lose_their_refresh_tokens(
    w: World, p: People
) -> None:
    pair = await w.access.login("nora@example.com", PASSWORD)
    await w.access.set_password(p.nora.principal(), p.nora.id, "a new long password")
    with pytest.raises(Unauthenticated):
        await w.access.refresh_tokens(pair.refresh_token)
    with pytest.raises(Unauthenticated):
        await w.access.login("nora@example.com", PASSWORD)
    await w.access.login("nora@example.com", "a new long password")


@pytest.mark.parametrize(
    ("caller", "target", "expected"),
    [
        ("root", "alice", OK),
        ("root", "ada", OK),
        ("alice", "victor", OK),
        ("alice", "alice", OK),
        ("victor", "victor", OK),
        ("alice", "carol", DENIED),  # also in B, which alice does not manage
        ("alice", "ada", DENIED),  # an administrator
        ("bob", "carol", DENIED),
        ("alice", "bob", HIDDEN),
        ("alice", "root", HIDDEN),
        ("victor", "alice", HIDDEN),
        ("nora", "victor", HIDDEN),
    ],
)
async def test_who_may_reset_whose_password(
    w: World, p: People, caller: str, target: str, expected: str
) -> None:
    victim: User = getattr(p, target)
    pair = await w.access.login(victim.email, PASSWORD)
    result = await outcome(
        w.access.set_password(getattr(p, caller).principal(), victim.id, "another long password")
    )
    if expected == OK:
        assert result == OK
        with pytest.raises(Unauthenticated):
            await w.access.refresh_tokens(pair.refresh_token)
        return
    assert type(result).__name__ == expected
    await w.access.login(victim.email, PASSWORD)
    await w.access.refresh_tokens(pair.refresh_token)


async def test_short_new_password_is_rejected(w: World, p: People) -> None:
    with pytest.raises(InvalidArgument):
        await w.access.set_password(p.nora.principal(), p.nora.id, "short")


# -- DeleteUser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "target", "expected"),
    [
        ("root", "ada", OK),
        ("root", "carol", OK),
        ("alice", "victor", OK),
        ("alice", "carol", DENIED),
        ("alice", "ada", DENIED),
        ("victor", "victor", DENIED),
        ("alice", "bob", HIDDEN),
        ("victor", "alice", HIDDEN),
        ("nora", "victor", HIDDEN),
    ],
)
async def test_who_may_delete_whom(
    w: World, p: People, caller: str, target: str, expected: str
) -> None:
    victim: User = getattr(p, target)
    principal = getattr(p, caller).principal()
    before = w.snapshot()
    result = await outcome(w.access.delete_user(principal, victim.id))
    if expected == OK:
        assert result == OK
        assert victim.id not in w.uow.committed.users
        return
    assert type(result).__name__ == expected
    assert w.snapshot() == before
    if expected == HIDDEN:
        assert isinstance(result, NotFound)
        missing_id = uuid.uuid4()
        with pytest.raises(NotFound) as missing:
            await w.access.delete_user(principal, missing_id)
        assert_same_not_found(result, victim.id, missing.value, missing_id)


async def test_deleted_user_can_no_longer_sign_in(w: World, p: People) -> None:
    pair = await w.access.login("victor@example.com", PASSWORD)
    await w.access.delete_user(p.alice.principal(), p.victor.id)
    assert refresh_tokens_of(w, p.victor) == []
    with pytest.raises(Unauthenticated):
        await w.access.authenticate(pair.access_token)
    with pytest.raises(Unauthenticated):
        await w.access.login("victor@example.com", PASSWORD)


# -- GetUser and ListUsers -------------------------------------------------------------------

SEES = {
    "root": {"root", "ada", "alice", "victor", "carol", "bob", "nora"},
    "alice": {"ada", "alice", "victor", "carol"},
    "bob": {"carol", "bob"},
    "victor": {"victor"},
    "nora": {"nora"},
}
LISTS_USERS = {
    "root": SEES["root"],
    "alice": SEES["alice"],
    "bob": SEES["bob"],
    "victor": set(),
    "nora": set(),
}


def shown_to(caller: Principal, user: User) -> User:
    """What a caller is shown of a user: every membership for admins and oneself, else only
    those in the caller's own clients."""
    if caller.admin or caller.user_id == user.id:
        return user
    own = {c: r for c, r in user.memberships.items() if c in caller.memberships}
    return dataclasses.replace(user, memberships=own)


@pytest.mark.parametrize("caller", SEES)
async def test_get_user_shows_exactly_the_users_the_caller_may_see(
    w: World, p: People, caller: str
) -> None:
    principal = getattr(p, caller).principal()
    for name in SEES["root"]:
        user: User = getattr(p, name)
        if name in SEES[caller]:
            assert await w.access.get_user(principal, user.id) == shown_to(principal, user)
            continue
        with pytest.raises(NotFound) as hidden:
            await w.access.get_user(principal, user.id)
        missing_id = uuid.uuid4()
        with pytest.raises(NotFound) as missing:
            await w.access.get_user(principal, missing_id)
        assert_same_not_found(hidden.value, user.id, missing.value, missing_id)


@pytest.mark.parametrize("caller", LISTS_USERS)
async def test_list_users_shows_admins_everyone_and_client_admins_their_clients(
    w: World, p: People, caller: str
) -> None:
    principal = getattr(p, caller).principal()
    seen: list[User] = []
    after = None
    while True:
        page = await w.access.list_users(principal, PageRequest(2, after))
        seen += page.items
        if page.next_after is None:
            break
        after = page.next_after
    assert {u.email.split("@")[0] for u in seen} == LISTS_USERS[caller]
    for listed in seen:
        stored = w.uow.committed.users[listed.id]
        assert listed == shown_to(principal, stored)
    assert [str(u.id) for u in seen] == sorted(str(u.id) for u in seen)


# -- the authenticated-caller cache ----------------------------------------------------------


async def cached_world(ttl_s: float) -> tuple[World, People]:
    w = await make_world()
    w.access = access_usecases(
        w.uow, w.hasher, w.codec, w.clock, POLICY, auth_cache_ttl=timedelta(seconds=ttl_s)
    )
    return w, await add_people(w)


async def test_a_remembered_caller_is_not_looked_up_again_within_the_ttl() -> None:
    w, p = await cached_world(2)
    token = (await w.access.login("alice@example.com", PASSWORD)).access_token
    first = await w.access.authenticate(token)
    opened = len(w.uow.opened)
    assert await w.access.authenticate(token) == first
    assert len(w.uow.opened) == opened, "answered from the cache"
    # Changed behind this process's back (another process): visible once the TTL is over.
    del w.uow.committed.users[p.alice.id]
    assert await w.access.authenticate(token) == first
    w.clock.set(w.clock.now() + timedelta(seconds=2))
    with pytest.raises(Unauthenticated):
        await w.access.authenticate(token)


async def test_changes_through_this_process_apply_at_once() -> None:
    w, p = await cached_world(60)
    token = (await w.access.login("alice@example.com", PASSWORD)).access_token
    assert w.a.client.id in (await w.access.authenticate(token)).memberships
    await w.access.set_client_access(SYSTEM, p.alice.id, w.a.client.id, None)
    assert w.a.client.id not in (await w.access.authenticate(token)).memberships
    await w.access.delete_user(SYSTEM, p.alice.id)
    with pytest.raises(Unauthenticated):
        await w.access.authenticate(token)


async def test_a_ttl_of_zero_asks_every_time() -> None:
    w, p = await cached_world(0)
    token = (await w.access.login("alice@example.com", PASSWORD)).access_token
    await w.access.authenticate(token)
    del w.uow.committed.users[p.alice.id]
    with pytest.raises(Unauthenticated):
        await w.access.authenticate(token)
