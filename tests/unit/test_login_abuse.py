"""Issue 10: sign-in limited per account and per address, unknown e-mails indistinguishable
from known ones, tokens revoked by a password change, and users shown only with the
memberships of the caller's own clients."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest

from adapters.throttle import MemoryAttemptThrottle
from domain.access import Principal, Role, User
from domain.errors import AlreadyExists, TooManyAttempts, Unauthenticated
from domain.model import Client
from domain.pagination import PageRequest
from domain.throttling import AttemptLimit, LoginLimits, account_key, address_key
from servers.parts import access_usecases
from tests.unit.fakes.access import FakePasswordHasher, FakeTokenCodec
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.common import FakeUnitOfWorkFactory
from usecases.access import BAD_LOGIN, REVOKED, NewUser, TokenPolicy

PASSWORD = "correct horse battery staple"
WRONG = "not the password at all"
MINUTE = timedelta(minutes=1)
LIMITS = LoginLimits(
    per_account=AttemptLimit(3, timedelta(minutes=15), MINUTE, 4 * MINUTE),
    per_address=AttemptLimit(5, timedelta(minutes=15), MINUTE, 4 * MINUTE),
)
HERE, THERE = "192.0.2.1", "198.51.100.7"


class Env:
    def __init__(self, cache_ttl_s: float = 0) -> None:
        self.clock = FakeClock()
        self.uow = FakeUnitOfWorkFactory()
        self.hasher = FakePasswordHasher()
        self.throttle = MemoryAttemptThrottle(self.clock)
        self.access = access_usecases(
            self.uow,
            self.hasher,
            FakeTokenCodec(self.clock),
            self.clock,
            TokenPolicy(),
            auth_cache_ttl=timedelta(seconds=cache_ttl_s),
            throttle=self.throttle,
            login_limits=LIMITS,
        )

    async def user(self, email: str, **memberships: Role) -> User:
        return await self.access.create_user(
            Principal.system(),
            NewUser(email, PASSWORD, memberships={uuid.UUID(c): r for c, r in memberships.items()}),
        )

    async def fail(self, email: str, source: str = HERE) -> BaseException:
        with pytest.raises((Unauthenticated, TooManyAttempts)) as err:
            await self.access.login(email, WRONG, source)
        return err.value


@pytest.fixture
async def env() -> Env:
    e = Env()
    await e.user("known@example.com")
    return e


# -- known and unknown e-mails ---------------------------------------------------------------


async def test_unknown_and_known_emails_get_the_same_answer_after_the_same_check(
    env: Env,
) -> None:
    await env.access.login("known@example.com", PASSWORD, HERE)  # the dummy hash is made
    answers = []
    for email in ("known@example.com", "unknown@example.com"):
        hashed, verified = env.hasher.hashed, env.hasher.verified
        err = await env.fail(email)
        answers.append((type(err), str(err)))
        # The password was checked in both cases (against a dummy hash for the unknown one),
        # and nothing else was hashed.
        assert (env.hasher.hashed, env.hasher.verified) == (hashed, verified + 1)
    assert answers[0] == answers[1] == (Unauthenticated, BAD_LOGIN)


async def test_the_first_call_of_a_process_does_the_same_work_whoever_asks() -> None:
    counts = []
    for email in ("known@example.com", "unknown@example.com"):
        e = Env()
        await e.user("known@example.com")
        hashed = e.hasher.hashed
        await e.fail(email)
        counts.append((e.hasher.hashed - hashed, e.hasher.verified))
    assert counts[0] == counts[1] == (1, 1)


async def test_unknown_emails_are_locked_out_exactly_like_known_ones(env: Env) -> None:
    outcomes = {}
    for email in ("known@example.com", "unknown@example.com"):
        outcomes[email] = [type(await env.fail(email, source="")).__name__ for _ in range(5)]
    assert outcomes["known@example.com"] == outcomes["unknown@example.com"]
    assert outcomes["known@example.com"] == ["Unauthenticated"] * 3 + ["TooManyAttempts"] * 2


# -- per account -----------------------------------------------------------------------------


async def test_an_account_is_locked_after_its_failures_from_any_address(env: Env) -> None:
    for source in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        assert isinstance(await env.fail("known@example.com", source), Unauthenticated)
    verified = env.hasher.verified
    with pytest.raises(TooManyAttempts) as err:
        await env.access.login("known@example.com", PASSWORD, "10.0.0.4")
    assert err.value.retry_after == MINUTE
    assert "retry in 60 s" in str(err.value)
    assert env.hasher.verified == verified, "no password check while locked"
    # Another account is not affected.
    await env.user("other@example.com")
    await env.access.login("other@example.com", PASSWORD, "10.0.0.4")


async def test_lockouts_grow_and_end(env: Env) -> None:
    waits = []
    for _ in range(4):
        for _ in range(3):
            assert isinstance(await env.fail("known@example.com", source=""), Unauthenticated)
        err = await env.fail("known@example.com", source="")
        assert isinstance(err, TooManyAttempts)
        waits.append(err.retry_after)
        env.clock.advance(err.retry_after - timedelta(seconds=1))
        assert isinstance(await env.fail("known@example.com", source=""), TooManyAttempts)
        env.clock.advance(timedelta(seconds=1))
    assert waits == [MINUTE, 2 * MINUTE, 4 * MINUTE, 4 * MINUTE]  # doubling, capped
    await env.access.login("known@example.com", PASSWORD, HERE)


async def test_a_successful_sign_in_clears_the_accounts_failures(env: Env) -> None:
    for _ in range(2):
        await env.fail("known@example.com", source="")
    await env.access.login("known@example.com", PASSWORD, "")
    for _ in range(3):
        assert isinstance(await env.fail("known@example.com", source=""), Unauthenticated)


async def test_failures_outside_the_window_are_forgotten(env: Env) -> None:
    for _ in range(3):
        await env.fail("known@example.com")
    env.clock.advance(timedelta(minutes=15))
    assert isinstance(await env.fail("known@example.com"), Unauthenticated)


# -- per address -----------------------------------------------------------------------------


async def test_an_address_is_locked_after_failures_on_many_accounts(env: Env) -> None:
    for i in range(5):
        assert isinstance(await env.fail(f"guess{i}@example.com", HERE), Unauthenticated)
    assert isinstance(await env.fail("guess9@example.com", HERE), TooManyAttempts)
    with pytest.raises(TooManyAttempts):
        await env.access.login("known@example.com", PASSWORD, HERE)
    # The account itself is fine from elsewhere.
    await env.access.login("known@example.com", PASSWORD, THERE)


async def test_malformed_emails_count_against_the_address(env: Env) -> None:
    for _ in range(5):
        assert isinstance(await env.fail("not an email", HERE), Unauthenticated)
    assert isinstance(await env.fail("not an email", HERE), TooManyAttempts)


async def test_successful_sign_ins_from_one_address_do_not_add_up(env: Env) -> None:
    for _ in range(12):
        await env.access.login("known@example.com", PASSWORD, HERE)


def test_ipv6_addresses_count_per_64_network_and_mapped_ipv4_as_ipv4() -> None:
    limit = LIMITS.per_address
    assert address_key("2001:db8::1", limit) == address_key("2001:db8::ffff:1", limit)
    assert address_key("2001:db8::1", limit) != address_key("2001:db8:0:1::1", limit)
    assert address_key("::ffff:192.0.2.1", limit) == address_key("192.0.2.1", limit)


def test_account_keys_do_not_hold_the_email() -> None:
    key = account_key("known@example.com", LIMITS.per_account)
    assert "known" not in key.name


# -- refresh tokens --------------------------------------------------------------------------


async def test_failed_refreshes_lock_the_address_and_good_ones_do_not_count(env: Env) -> None:
    pair = await env.access.login("known@example.com", PASSWORD, HERE)
    for _ in range(8):
        pair = await env.access.refresh_tokens(pair.refresh_token, HERE)
    for _ in range(5):
        with pytest.raises(Unauthenticated):
            await env.access.refresh_tokens("guessed-" + uuid.uuid4().hex, HERE)
    with pytest.raises(TooManyAttempts) as err:
        await env.access.refresh_tokens(pair.refresh_token, HERE)
    assert "refresh" in str(err.value)
    await env.access.refresh_tokens(pair.refresh_token, THERE)


async def test_an_overloaded_hasher_does_not_count_as_an_attempt(env: Env) -> None:
    async def busy(password_hash: str, password: str) -> bool:
        raise TooManyAttempts("too many password checks in progress", timedelta(seconds=1))

    await env.access.login("known@example.com", PASSWORD, HERE)
    env.hasher.verify = busy  # type: ignore[method-assign]
    for _ in range(10):
        with pytest.raises(TooManyAttempts, match="in progress"):
            await env.access.login("known@example.com", WRONG, HERE)
    del env.hasher.verify
    for _ in range(3):
        assert isinstance(await env.fail("known@example.com"), Unauthenticated)


# -- revocation ------------------------------------------------------------------------------


async def test_a_password_reset_revokes_access_refresh_and_service_tokens() -> None:
    env = Env(cache_ttl_s=60)
    user = await env.user("known@example.com")
    pair = await env.access.login("known@example.com", PASSWORD)
    service, _ = await env.access.mint_service_token(
        Principal.system(), "known@example.com", timedelta(days=1)
    )
    for token in (pair.access_token, service):
        assert (await env.access.authenticate(token)).user_id == user.id  # and cached
    await env.access.set_password(Principal.system(), user.id, "a brand new password")
    for token in (pair.access_token, service):
        with pytest.raises(Unauthenticated, match="revoked"):
            await env.access.authenticate(token)
    with pytest.raises(Unauthenticated):
        await env.access.refresh_tokens(pair.refresh_token)
    fresh = await env.access.login("known@example.com", "a brand new password")
    assert (await env.access.authenticate(fresh.access_token)).user_id == user.id


async def test_changing_ones_own_password_revokes_the_token_used_for_it() -> None:
    env = Env()
    user = await env.user("known@example.com")
    pair = await env.access.login("known@example.com", PASSWORD)
    me = await env.access.authenticate(pair.access_token)
    await env.access.set_password(me, user.id, "a brand new password")
    with pytest.raises(Unauthenticated, match=re.escape(REVOKED)):
        await env.access.authenticate(pair.access_token)


async def test_another_process_honours_a_reset_within_its_cache_ttl() -> None:
    here = Env(cache_ttl_s=2)
    user = await here.user("known@example.com")
    # One database, two processes with caches of their own.
    elsewhere = access_usecases(
        here.uow,
        here.hasher,
        FakeTokenCodec(here.clock),
        here.clock,
        TokenPolicy(),
        auth_cache_ttl=timedelta(seconds=2),
    )
    old = (await here.access.login("known@example.com", PASSWORD)).access_token
    await elsewhere.authenticate(old)  # remembered there
    await here.access.set_password(Principal.system(), user.id, "a brand new password")
    with pytest.raises(Unauthenticated):
        await here.access.authenticate(old)  # at once where it happened
    assert (await elsewhere.authenticate(old)).user_id == user.id  # within the TTL
    # A token issued after the reset is accepted elsewhere at once (the memory is stale).
    new = (await here.access.login("known@example.com", "a brand new password")).access_token
    assert (await elsewhere.authenticate(new)).user_id == user.id
    with pytest.raises(Unauthenticated):
        await elsewhere.authenticate(old)
    here.clock.advance(timedelta(seconds=2))
    with pytest.raises(Unauthenticated):
        await elsewhere.authenticate(old)


async def test_granting_access_does_not_undo_a_revocation() -> None:
    env = Env()
    user = await env.user("known@example.com")
    old = (await env.access.login("known@example.com", PASSWORD)).access_token
    async with env.uow() as uow:
        stale = await uow.users.get(user.id)  # read before the reset
    await env.access.set_password(Principal.system(), user.id, "a brand new password")
    async with env.uow() as uow:
        await uow.users.update(stale)  # a concurrent writer with the old version
        await uow.commit()
    with pytest.raises(Unauthenticated):
        await env.access.authenticate(old)
    # Nor does it put the old password back.
    await env.access.login("known@example.com", "a brand new password")
    with pytest.raises(Unauthenticated):
        await env.access.login("known@example.com", PASSWORD)


# -- tenant edges ----------------------------------------------------------------------------


async def test_a_shared_user_is_shown_with_the_callers_clients_only() -> None:
    env = Env()
    a, b = uuid.uuid4(), uuid.uuid4()
    for client_id, name in ((a, "A"), (b, "B")):
        env.uow.committed.clients[client_id] = Client(
            id=client_id,
            display_name=name,
            create_time=env.clock.now(),
            update_time=env.clock.now(),
        )
    alice = await env.user("alice@example.com", **{str(a): Role.CLIENT_ADMIN})
    bob = await env.user("bob@example.com", **{str(b): Role.CLIENT_ADMIN})
    shared = await env.user(
        "shared@example.com", **{str(a): Role.VIEWER, str(b): Role.CLIENT_ADMIN}
    )
    for admin, own, other in ((alice, a, b), (bob, b, a)):
        caller = admin.principal()
        got = await env.access.get_user(caller, shared.id)
        assert set(got.memberships) == {own}
        found = await env.access.find_user_by_email(caller, "shared@example.com")
        assert set(found.memberships) == {own}
        listed = (await env.access.list_users(caller, PageRequest())).items
        assert {u.id for u in listed} == {admin.id, shared.id}
        assert all(other not in u.memberships for u in listed)
    # ADMIN and the user themself see all of them.
    for caller in (Principal.system(), shared.principal()):
        assert set((await env.access.get_user(caller, shared.id)).memberships) == {a, b}


async def test_a_taken_email_is_only_said_to_be_unavailable(env: Env) -> None:
    with pytest.raises(AlreadyExists) as err:
        await env.user("KNOWN@example.com")
    assert err.value.field == "email"
    assert "known@example.com" not in err.value.public
    assert err.value.public == "email is not available: it is already in use"
