"""Signing in, tokens, and managing users and their access to clients."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.access import (
    AccessClaims,
    Principal,
    RefreshToken,
    Role,
    TokenPair,
    User,
    check_password,
    normalize_email,
    require_admin,
    require_manage,
)
from domain.errors import (
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TooManyAttempts,
    Unauthenticated,
)
from domain.model import new_id
from domain.pagination import Page, PageRequest
from domain.ports.access import (
    AccessUnitOfWork,
    AttemptThrottle,
    PasswordHasher,
    TokenCodec,
    UserFilter,
)
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.throttling import LoginLimits, ThrottleKey, account_key, address_key

BAD_LOGIN = "wrong email or password"


def _hash_refresh(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class TokenPolicy:
    access_ttl: timedelta = timedelta(minutes=15)
    refresh_ttl: timedelta = timedelta(days=30)


class _Issuer:
    """Shared by Login and RefreshTokens: a new access token and a new stored refresh token."""

    def __init__(self, codec: TokenCodec, clock: Clock, policy: TokenPolicy) -> None:
        self._codec, self._clock, self._policy = codec, clock, policy

    async def issue(self, uow: AccessUnitOfWork, user: User) -> TokenPair:
        now = self._clock.now()
        access_exp = now + self._policy.access_ttl
        access = self._codec.encode(
            AccessClaims(
                user_id=user.id,
                token_id=secrets.token_hex(8),
                kind="access",
                issued_at=now,
                expires_at=access_exp,
                token_version=user.token_version,
            )
        )
        refresh = secrets.token_urlsafe(32)
        refresh_exp = now + self._policy.refresh_ttl
        await uow.refresh_tokens.add(
            RefreshToken(
                id=new_id(),
                user_id=user.id,
                token_hash=_hash_refresh(refresh),
                expires_at=refresh_exp,
            )
        )
        return TokenPair(access, access_exp, refresh, refresh_exp)


class _Gate:
    """Asks the throttle before an attempt; TooManyAttempts when the caller must wait."""

    def __init__(self, throttle: AttemptThrottle | None, reason: str) -> None:
        self._throttle, self._reason = throttle, reason

    async def admit(self, keys: Sequence[ThrottleKey]) -> None:
        if self._throttle is None or not keys:
            return
        wait = await self._throttle.attempt(keys)
        if wait is not None:
            raise TooManyAttempts(self._reason, wait)

    async def succeeded(self, reset: Sequence[ThrottleKey], refund: Sequence[ThrottleKey]) -> None:
        if self._throttle is not None and (reset or refund):
            await self._throttle.succeeded(reset, refund)


class Login:
    """Email and password for a token pair. Unknown email and wrong password look the same:
    same answer, and the same password check (against a dummy hash for unknown emails).

    Attempts are limited per account and per source address (``LoginLimits``); a locked
    account or address gets TooManyAttempts with the time to wait, without a password check.
    Unknown emails are counted exactly like known ones, so a lockout reveals nothing."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[AccessUnitOfWork],
        hasher: PasswordHasher,
        codec: TokenCodec,
        clock: Clock,
        policy: TokenPolicy,
        throttle: AttemptThrottle | None = None,
        limits: LoginLimits | None = None,
    ) -> None:
        self._uow, self._hasher = uow, hasher
        self._issuer = _Issuer(codec, clock, policy)
        self._limits = limits or LoginLimits()
        self._gate = _Gate(throttle, "too many sign-in attempts for this account or address")
        self._dummy_hash: str | None = None

    async def __call__(self, email: str, password: str, source: str = "") -> TokenPair:
        address = [address_key(source, self._limits.per_address)] if source else []
        try:
            email = normalize_email(email)
        except InvalidArgument:
            await self._gate.admit(address)
            raise Unauthenticated(BAD_LOGIN) from None
        keys = [account_key(email, self._limits.per_account), *address]
        await self._gate.admit(keys)
        try:
            if self._dummy_hash is None:  # made before any check, so no first call differs
                self._dummy_hash = await self._hasher.hash(secrets.token_hex(16))
            async with self._uow() as uow:
                user = await uow.users.find_by_email(email)
            # No connection is held while the (slow, bounded) check runs or waits.
            ok = await self._hasher.verify(
                self._dummy_hash if user is None else user.password_hash, password
            )
        except TooManyAttempts:
            await self._gate.succeeded([], keys)  # not checked: the attempt does not count
            raise
        if user is None or not ok:
            raise Unauthenticated(BAD_LOGIN)
        async with self._uow() as uow:
            pair = await self._issuer.issue(uow, user)
            await uow.commit()
        await self._gate.succeeded(keys[:1], address)
        return pair


class RefreshTokens:
    """A refresh token for a new pair; the old one is spent. Re-use of a spent token revokes
    every refresh token of that user (it was stolen or leaked). Failed refreshes count
    against the source address, like failed sign-ins."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[AccessUnitOfWork],
        codec: TokenCodec,
        clock: Clock,
        policy: TokenPolicy,
        throttle: AttemptThrottle | None = None,
        limits: LoginLimits | None = None,
    ) -> None:
        self._uow, self._clock = uow, clock
        self._issuer = _Issuer(codec, clock, policy)
        self._limits = limits or LoginLimits()
        self._gate = _Gate(throttle, "too many failed token refreshes from this address")

    async def __call__(self, refresh_token: str, source: str = "") -> TokenPair:
        address = [address_key(source, self._limits.per_address, "refresh")] if source else []
        await self._gate.admit(address)
        async with self._uow() as uow:
            stored = await uow.refresh_tokens.find(_hash_refresh(refresh_token))
            if stored is None or stored.expires_at <= self._clock.now():
                raise Unauthenticated("invalid or expired refresh token")
            if stored.revoked:
                await uow.refresh_tokens.revoke_all(stored.user_id)
                await uow.commit()
                raise Unauthenticated("invalid or expired refresh token")
            try:
                user = await uow.users.get(stored.user_id)
            except NotFound:
                raise Unauthenticated("invalid or expired refresh token") from None
            await uow.refresh_tokens.revoke(stored.id)
            pair = await self._issuer.issue(uow, user)
            await uow.commit()
        await self._gate.succeeded([], address)
        return pair


class PrincipalCache:
    """Callers recently looked up, with their token version, kept for ``ttl`` so that not
    every RPC asks PostgreSQL for its user. A change made through this process (delete,
    access, password) forgets the user at once; one made through another process takes
    effect within ``ttl``. ``ttl`` 0: no cache."""

    def __init__(self, clock: Clock, ttl: timedelta, size: int = 10_000) -> None:
        self._clock, self._ttl, self._size = clock, ttl, size
        self._entries: OrderedDict[uuid.UUID, tuple[Principal, int, datetime]] = OrderedDict()

    def get(self, user_id: uuid.UUID) -> tuple[Principal, int] | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        if entry[2] <= self._clock.now():
            del self._entries[user_id]
            return None
        return entry[0], entry[1]

    def put(self, user_id: uuid.UUID, principal: Principal, token_version: int = 0) -> None:
        if self._ttl <= timedelta(0):
            return
        self._entries[user_id] = (principal, token_version, self._clock.now() + self._ttl)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, user_id: uuid.UUID) -> None:
        self._entries.pop(user_id, None)


REVOKED = "the token was revoked (the password changed): sign in again"


class Authenticate:
    """A bearer token to the caller it stands for; the user must still exist (looked up, or
    remembered for a moment by the cache) and the token must be of the user's current token
    version (a password change or reset revokes every earlier token)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[AccessUnitOfWork],
        codec: TokenCodec,
        cache: PrincipalCache | None = None,
    ) -> None:
        self._uow, self._codec, self._cache = uow, codec, cache

    async def __call__(self, token: str) -> Principal:
        claims = self._codec.decode(token)
        known = self._cache.get(claims.user_id) if self._cache is not None else None
        # A token newer than the remembered user means the memory is stale: look again.
        if known is None or claims.token_version > known[1]:
            async with self._uow() as uow:
                try:
                    user = await uow.users.get(claims.user_id)
                except NotFound:
                    raise Unauthenticated("the token's user no longer exists") from None
            known = (user.principal(), user.token_version)
            if self._cache is not None:
                self._cache.put(claims.user_id, *known)
        if claims.token_version != known[1]:
            raise Unauthenticated(REVOKED)
        return known[0]


class MintServiceToken:
    """A long-lived token for a service account (an ordinary user), for the operator."""

    def __init__(
        self, uow: UnitOfWorkFactory[AccessUnitOfWork], codec: TokenCodec, clock: Clock
    ) -> None:
        self._uow, self._codec, self._clock = uow, codec, clock

    async def __call__(self, caller: Principal, email: str, ttl: timedelta) -> tuple[str, User]:
        require_admin(caller, "minting a service token")
        if ttl <= timedelta(0):
            raise InvalidArgument("ttl", "must be positive")
        async with self._uow() as uow:
            user = await uow.users.find_by_email(normalize_email(email))
        if user is None:
            raise NotFound("user", email)
        now = self._clock.now()
        token = self._codec.encode(
            AccessClaims(
                user_id=user.id,
                token_id=secrets.token_hex(8),
                kind="service",
                issued_at=now,
                expires_at=now + ttl,
                token_version=user.token_version,
            )
        )
        return token, user


# -- users -------------------------------------------------------------------------------------


def can_see_user(caller: Principal, user: User) -> bool:
    """Admins see everyone; a client admin sees the users of the clients they manage."""
    if caller.admin or caller.user_id == user.id:
        return True
    managed = caller.managed_clients() or frozenset()
    return bool(managed & set(user.memberships))


def can_manage_user(caller: Principal, user: User) -> bool:
    """Admins manage everyone; a client admin manages non-admin users all of whose clients
    they manage."""
    if caller.admin:
        return True
    managed = caller.managed_clients() or frozenset()
    return not user.admin and bool(user.memberships) and set(user.memberships) <= managed


def seen_by(caller: Principal, user: User) -> User:
    """The user as ``caller`` may see it: only the memberships of clients the caller belongs
    to (all of them for admins and for the user themself), so a client admin never learns
    which other clients share a user, nor the user's role there."""
    if caller.admin or caller.user_id == user.id:
        return user
    readable = caller.readable_clients() or frozenset()
    return dataclasses.replace(
        user, memberships={c: r for c, r in user.memberships.items() if c in readable}
    )


async def visible_user(caller: Principal, uow: AccessUnitOfWork, user_id: uuid.UUID) -> User:
    user = await uow.users.get(user_id)
    if not can_see_user(caller, user):
        raise NotFound("user", str(user_id))
    return user


@dataclass(frozen=True, slots=True)
class NewUser:
    email: str
    password: str
    display_name: str = ""
    admin: bool = False
    memberships: Mapping[uuid.UUID, Role] = field(default_factory=dict)


class CreateUser:
    def __init__(
        self, uow: UnitOfWorkFactory[AccessUnitOfWork], hasher: PasswordHasher, clock: Clock
    ) -> None:
        self._uow, self._hasher, self._clock = uow, hasher, clock

    async def __call__(self, caller: Principal, new: NewUser) -> User:
        if new.admin:
            require_admin(caller, "creating an administrator")
        if not new.admin and not new.memberships and not caller.admin:
            raise InvalidArgument("memberships", "a user needs access to at least one client")
        email = normalize_email(new.email)
        check_password(new.password)
        async with self._uow() as uow:
            for client_id in new.memberships:
                client = await uow.clients.get(client_id)
                require_manage(caller, client.id, client.KIND, client_id)
        now = self._clock.now()
        user = User(
            id=new_id(),
            email=email,
            display_name=new.display_name,
            password_hash=await self._hasher.hash(new.password),
            admin=new.admin,
            memberships=new.memberships,
            create_time=now,
            update_time=now,
        )
        async with self._uow() as uow:
            await uow.users.add(user)
            await uow.commit()
        return seen_by(caller, user)


class SetClientAccess:
    """Grant (role) or revoke (None) a user's access to one client."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[AccessUnitOfWork],
        clock: Clock,
        cache: PrincipalCache | None = None,
    ) -> None:
        self._uow, self._clock, self._cache = uow, clock, cache

    async def __call__(
        self, caller: Principal, user_id: uuid.UUID, client_id: uuid.UUID, role: Role | None
    ) -> User:
        async with self._uow() as uow:
            client = await uow.clients.get(client_id)
            require_manage(caller, client.id, client.KIND, client_id)
            user = await visible_user(caller, uow, user_id)
            memberships = dict(user.memberships)
            if role is None:
                memberships.pop(client_id, None)
            else:
                memberships[client_id] = role
            updated = dataclasses.replace(
                user, memberships=memberships, update_time=self._clock.now()
            )
            await uow.users.update(updated)
            await uow.commit()
        if self._cache is not None:
            self._cache.forget(user_id)
        return seen_by(caller, updated)


class SetPassword:
    """Users change their own password; admins and their client admins may reset it. Every
    token of the user is revoked: refresh tokens in the store, and access and service tokens
    by a new token version (at once in this process, within the cache TTL in others)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[AccessUnitOfWork],
        hasher: PasswordHasher,
        clock: Clock,
        cache: PrincipalCache | None = None,
    ) -> None:
        self._uow, self._hasher, self._clock, self._cache = uow, hasher, clock, cache

    async def __call__(self, caller: Principal, user_id: uuid.UUID, password: str) -> None:
        check_password(password)
        async with self._uow() as uow:
            user = await visible_user(caller, uow, user_id)
            if caller.user_id != user.id and not can_manage_user(caller, user):
                raise PermissionDenied("resetting this user's password needs ADMIN")
            password_hash = await self._hasher.hash(password)  # slow: only once allowed
            await uow.users.update(
                dataclasses.replace(
                    user,
                    password_hash=password_hash,
                    update_time=self._clock.now(),
                    token_version=user.token_version + 1,
                )
            )
            await uow.refresh_tokens.revoke_all(user.id)
            await uow.commit()
        if self._cache is not None:
            self._cache.forget(user.id)


class DeleteUser:
    def __init__(
        self, uow: UnitOfWorkFactory[AccessUnitOfWork], cache: PrincipalCache | None = None
    ) -> None:
        self._uow, self._cache = uow, cache

    async def __call__(self, caller: Principal, user_id: uuid.UUID) -> None:
        async with self._uow() as uow:
            user = await visible_user(caller, uow, user_id)
            if not can_manage_user(caller, user):
                raise PermissionDenied("deleting this user needs ADMIN")
            await uow.users.delete(user_id)
            await uow.commit()
        if self._cache is not None:
            self._cache.forget(user_id)


class GetUser:
    def __init__(self, uow: UnitOfWorkFactory[AccessUnitOfWork]) -> None:
        self._uow = uow

    async def __call__(self, caller: Principal, user_id: uuid.UUID) -> User:
        async with self._uow() as uow:
            return seen_by(caller, await visible_user(caller, uow, user_id))


class FindUserByEmail:
    def __init__(self, uow: UnitOfWorkFactory[AccessUnitOfWork]) -> None:
        self._uow = uow

    async def __call__(self, caller: Principal, email: str) -> User:
        async with self._uow() as uow:
            user = await uow.users.find_by_email(normalize_email(email))
        if user is None or not can_see_user(caller, user):
            raise NotFound("user", email)
        return seen_by(caller, user)


class ListUsers:
    """Admins list everyone; client admins the users of their clients; viewers nobody."""

    def __init__(self, uow: UnitOfWorkFactory[AccessUnitOfWork]) -> None:
        self._uow = uow

    async def __call__(self, caller: Principal, page: PageRequest) -> Page[User]:
        async with self._uow() as uow:
            found = await uow.users.list(UserFilter(visible_clients=caller.managed_clients()), page)
        return dataclasses.replace(found, items=[seen_by(caller, u) for u in found.items])


@dataclass(frozen=True, slots=True)
class AccessUseCases:
    login: Login
    refresh_tokens: RefreshTokens
    authenticate: Authenticate
    mint_service_token: MintServiceToken
    create_user: CreateUser
    set_client_access: SetClientAccess
    set_password: SetPassword
    delete_user: DeleteUser
    get_user: GetUser
    find_user_by_email: FindUserByEmail
    list_users: ListUsers
