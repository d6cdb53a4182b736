"""Access rules of the domain: principals, the require_* checks, emails, passwords, users."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.access import (
    MAX_EMAIL_LENGTH,
    MAX_PASSWORD_LENGTH,
    MIN_PASSWORD_LENGTH,
    Principal,
    Role,
    User,
    check_password,
    normalize_email,
    require_admin,
    require_manage,
    require_read,
)
from domain.errors import InvalidArgument, NotFound, PermissionDenied

T0 = datetime(2025, 1, 1, tzinfo=UTC)
A, B = uuid.UUID(int=0xA), uuid.UUID(int=0xB)


def fields_of(err: InvalidArgument) -> list[str]:
    return [v.field for v in err.violations]


def principal(admin: bool = False, **memberships: Role) -> Principal:
    by_id = {{"a": A, "b": B}[name]: role for name, role in memberships.items()}
    return Principal(uuid.uuid4(), admin=admin, memberships=by_id)


def a_user(**overrides: object) -> User:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "email": "user@example.com",
        "password_hash": "fake$secret-hash",
        "create_time": T0,
        "update_time": T0,
    }
    return User(**(values | overrides))  # type: ignore[arg-type]


# -- Principal -------------------------------------------------------------------------------


def test_admin_reads_and_manages_every_client_without_memberships() -> None:
    admin = principal(admin=True)
    other = uuid.uuid4()
    assert (admin.can_read(A), admin.can_manage(A)) == (True, True)
    assert (admin.can_read(other), admin.can_manage(other)) == (True, True)
    assert admin.readable_clients() is None
    assert admin.managed_clients() is None


def test_client_admin_reads_and_manages_only_their_client() -> None:
    caller = principal(a=Role.CLIENT_ADMIN)
    assert (caller.can_read(A), caller.can_manage(A)) == (True, True)
    assert (caller.can_read(B), caller.can_manage(B)) == (False, False)
    assert caller.readable_clients() == frozenset({A})
    assert caller.managed_clients() == frozenset({A})


def test_viewer_reads_but_does_not_manage() -> None:
    caller = principal(a=Role.VIEWER)
    assert (caller.can_read(A), caller.can_manage(A)) == (True, False)
    assert caller.readable_clients() == frozenset({A})
    assert caller.managed_clients() == frozenset()


def test_roles_are_per_client() -> None:
    caller = principal(a=Role.VIEWER, b=Role.CLIENT_ADMIN)
    assert (caller.can_manage(A), caller.can_manage(B)) == (False, True)
    assert caller.readable_clients() == frozenset({A, B})
    assert caller.managed_clients() == frozenset({B})


def test_caller_without_memberships_sees_nothing_which_is_not_everything() -> None:
    caller = principal()
    assert not caller.can_read(A)
    assert not caller.can_manage(A)
    # An empty set, not None: None would mean "every client" to a repository.
    assert caller.readable_clients() == frozenset()
    assert caller.managed_clients() == frozenset()


def test_system_principal_is_an_admin() -> None:
    system = Principal.system()
    assert system.admin
    assert system.user_id == uuid.UUID(int=0)
    assert system.can_manage(uuid.uuid4())


def test_principal_memberships_cannot_change_after_construction() -> None:
    memberships = {A: Role.VIEWER}
    caller = Principal(uuid.uuid4(), memberships=memberships)
    memberships[A] = Role.CLIENT_ADMIN
    memberships[B] = Role.CLIENT_ADMIN
    assert dict(caller.memberships) == {A: Role.VIEWER}
    with pytest.raises(TypeError):
        caller.memberships[A] = Role.CLIENT_ADMIN  # type: ignore[index]


# -- require_* -------------------------------------------------------------------------------


def test_require_read_hides_an_unreadable_resource_as_not_found() -> None:
    ident = uuid.uuid4()
    with pytest.raises(NotFound) as exc:
        require_read(principal(b=Role.CLIENT_ADMIN), A, "tracker", ident)
    missing = NotFound("tracker", str(ident))
    assert (exc.value.kind, exc.value.ident, str(exc.value)) == (
        missing.kind,
        missing.ident,
        str(missing),
    )


@pytest.mark.parametrize("caller", [principal(admin=True), principal(a=Role.VIEWER)])
def test_require_read_passes_for_admins_and_members(caller: Principal) -> None:
    require_read(caller, A, "tracker", uuid.uuid4())


@pytest.mark.parametrize(
    ("caller", "outcome"),
    [
        (principal(admin=True), None),
        (principal(a=Role.CLIENT_ADMIN), None),
        (principal(a=Role.VIEWER), PermissionDenied),
        (principal(b=Role.CLIENT_ADMIN), NotFound),
        (principal(), NotFound),
    ],
    ids=["admin", "client_admin_a", "viewer_a", "client_admin_b", "nobody"],
)
def test_require_manage_is_not_found_unless_readable_then_permission_denied(
    caller: Principal, outcome: type[Exception] | None
) -> None:
    ident = uuid.uuid4()
    if outcome is None:
        require_manage(caller, A, "brand", ident)
        return
    with pytest.raises(outcome) as exc:
        require_manage(caller, A, "brand", ident)
    if isinstance(exc.value, NotFound):
        assert str(exc.value) == str(NotFound("brand", str(ident)))
    else:
        assert "CLIENT_ADMIN" in str(exc.value)


def test_require_admin_denies_everyone_else_naming_the_action() -> None:
    require_admin(principal(admin=True), "creating a client")
    for caller in (principal(a=Role.CLIENT_ADMIN, b=Role.CLIENT_ADMIN), principal()):
        with pytest.raises(PermissionDenied, match="creating a client needs ADMIN"):
            require_admin(caller, "creating a client")


# -- emails and passwords --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_email", "normalized"),
    [
        ("ann@example.com", "ann@example.com"),
        ("  Ann.Lee@Example.COM\n", "ann.lee@example.com"),
        ("a+tag@sub.example.co.uk", "a+tag@sub.example.co.uk"),
    ],
)
def test_normalize_email_trims_and_lowercases(given_email: str, normalized: str) -> None:
    assert normalize_email(given_email) == normalized


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "ann",
        "ann@",
        "@example.com",
        "ann@example",
        "ann@example.c",
        "ann@@example.com",
        "ann lee@example.com",
        "ann@exa mple.com",
        "ann\x00@example.com",
        "a" * 65 + "@example.com",
        "a@" + "b" * 256 + ".com",
        "a" * 64 + "@" + "b" * 252 + ".com",  # 321 characters: more than the table allows
    ],
)
def test_normalize_email_rejects_what_is_not_an_address(bad: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        normalize_email(bad)
    assert fields_of(exc.value) == ["email"]


def test_longest_accepted_email_fits_the_users_table() -> None:
    email = "a" * 64 + "@" + "b" * 252 + ".co"
    assert len(email) == MAX_EMAIL_LENGTH
    assert normalize_email(email) == email


@pytest.mark.parametrize("length", [MIN_PASSWORD_LENGTH, 64, MAX_PASSWORD_LENGTH])
def test_password_of_allowed_length_passes(length: int) -> None:
    check_password("p" * length)


@pytest.mark.parametrize("length", [0, MIN_PASSWORD_LENGTH - 1, MAX_PASSWORD_LENGTH + 1])
def test_password_too_short_or_too_long_is_rejected(length: int) -> None:
    with pytest.raises(InvalidArgument) as exc:
        check_password("p" * length)
    assert fields_of(exc.value) == ["password"]


# -- User ------------------------------------------------------------------------------------


def test_user_email_is_normalized_at_construction() -> None:
    assert a_user(email=" Ann@Example.com ").email == "ann@example.com"


def test_user_with_a_bad_email_cannot_exist() -> None:
    with pytest.raises(InvalidArgument) as exc:
        a_user(email="not-an-email")
    assert fields_of(exc.value) == ["email"]


@pytest.mark.parametrize("name", ["x" * 201, "Ann\x00"])
def test_user_display_name_is_bounded_and_has_no_nul(name: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        a_user(display_name=name)
    assert fields_of(exc.value) == ["display_name"]


def test_user_repr_does_not_show_the_password_hash() -> None:
    assert "secret-hash" not in repr(a_user())


def test_user_memberships_are_frozen() -> None:
    memberships = {A: Role.VIEWER}
    user = a_user(memberships=memberships)
    memberships[B] = Role.VIEWER
    assert dict(user.memberships) == {A: Role.VIEWER}
    with pytest.raises(TypeError):
        user.memberships[B] = Role.VIEWER  # type: ignore[index]


def test_user_principal_carries_id_admin_flag_and_memberships() -> None:
    user = a_user(admin=True, memberships={A: Role.CLIENT_ADMIN, B: Role.VIEWER})
    caller = user.principal()
    assert (caller.user_id, caller.admin) == (user.id, True)
    assert dict(caller.memberships) == {A: Role.CLIENT_ADMIN, B: Role.VIEWER}


# -- properties ------------------------------------------------------------------------------

CLIENT_POOL = [uuid.UUID(int=i) for i in range(1, 9)]
memberships_strategy = st.dictionaries(st.sampled_from(CLIENT_POOL), st.sampled_from(list(Role)))


@given(memberships=memberships_strategy, admin=st.booleans())
def test_managing_implies_reading(memberships: dict[uuid.UUID, Role], admin: bool) -> None:
    caller = Principal(uuid.uuid4(), admin=admin, memberships=memberships)
    for client in [*CLIENT_POOL, uuid.uuid4()]:
        if caller.can_manage(client):
            assert caller.can_read(client)


@given(memberships=memberships_strategy)
def test_non_admins_read_exactly_their_memberships_and_manage_their_admin_ones(
    memberships: dict[uuid.UUID, Role],
) -> None:
    caller = Principal(uuid.uuid4(), memberships=memberships)
    readable = caller.readable_clients()
    managed = caller.managed_clients()
    assert readable == frozenset(memberships)
    assert managed == frozenset(c for c, r in memberships.items() if r is Role.CLIENT_ADMIN)
    assert managed <= readable
    for client in CLIENT_POOL:
        assert caller.can_read(client) == (client in readable)
        assert caller.can_manage(client) == (client in managed)


@given(memberships=memberships_strategy)
def test_admins_read_and_manage_everything_whatever_their_memberships(
    memberships: dict[uuid.UUID, Role],
) -> None:
    caller = Principal(uuid.uuid4(), admin=True, memberships=memberships)
    assert caller.readable_clients() is None
    assert caller.managed_clients() is None
    assert all(caller.can_manage(c) for c in [*CLIENT_POOL, uuid.uuid4()])
