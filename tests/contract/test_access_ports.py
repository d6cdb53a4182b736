"""The access ports' contract (users, refresh tokens), on the fakes and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from domain.access import Role, User
from domain.errors import (
    AlreadyExists,
    NotFound,
)
from domain.pagination import PageRequest
from domain.ports.access import (
    UserFilter,
)
from tests.contract.builders import (
    a_refresh_token,
    a_user,
    two_clients_with_everything,
)
from tests.contract.conftest import Uows

# -- users and refresh tokens ----------------------------------------------------------------


@pytest.mark.postgres_differs("aborted-transaction")
async def test_user_email_is_unique_and_names_the_field(uows: Uows) -> None:
    factory = uows
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


async def test_missing_user_is_not_found_naming_kind_and_id(uows: Uows) -> None:
    factory = uows
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


@pytest.mark.postgres_differs("membership-kind")
async def test_user_membership_of_a_missing_client_is_a_missing_parent(uows: Uows) -> None:
    factory = uows
    async with factory() as uow:
        with pytest.raises(NotFound) as exc:
            await uow.users.add(a_user(memberships={uuid.uuid4(): Role.VIEWER}))
        assert exc.value.kind.startswith("parent of")


async def test_users_and_tokens_follow_commit_and_rollback(uows: Uows) -> None:
    factory = uows
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


async def test_deleting_a_user_deletes_their_refresh_tokens(uows: Uows) -> None:
    factory = uows
    user, other = a_user("a@example.com"), a_user("b@example.com")
    async with factory() as uow:
        await uow.users.add(user)
        await uow.users.add(other)
        await uow.refresh_tokens.add(a_refresh_token(user, b"1" * 32))
        await uow.refresh_tokens.add(a_refresh_token(other, b"2" * 32))
        await uow.users.delete(user.id)
        assert await uow.refresh_tokens.find(b"1" * 32) is None
        assert await uow.refresh_tokens.find(b"2" * 32) is not None


async def test_deleting_a_client_removes_it_from_every_membership(uows: Uows) -> None:
    factory = uows
    a, b = await two_clients_with_everything(factory)
    user = a_user(memberships={a.id: Role.VIEWER, b.id: Role.CLIENT_ADMIN})
    async with factory() as uow:
        await uow.users.add(user)
        await uow.clients.delete(a.id, cascade=True)
        assert dict((await uow.users.get(user.id)).memberships) == {b.id: Role.CLIENT_ADMIN}


async def test_refresh_tokens_revoke_one_or_all_of_a_user(uows: Uows) -> None:
    factory = uows
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


async def test_user_list_honours_visible_clients_and_pages_by_id(uows: Uows) -> None:
    factory = uows
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
