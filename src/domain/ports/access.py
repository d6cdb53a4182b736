"""Ports of the access capability: users, refresh tokens, password hashing, access tokens
and the login throttle.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from domain.access import AccessClaims, RefreshToken, User
from domain.pagination import Page, PageRequest
from domain.ports.common import Transaction
from domain.ports.setup import ClientRepository
from domain.throttling import ThrottleKey


@dataclass(frozen=True, slots=True)
class UserFilter:
    """Users with a membership in one of ``visible_clients`` (None: every user)."""

    visible_clients: frozenset[uuid.UUID] | None = None


class UserRepository(Protocol):
    """Users with their memberships. ``add`` raises AlreadyExists(field "email")."""

    async def add(self, user: User) -> None: ...

    async def get(self, user_id: uuid.UUID) -> User: ...

    async def find_by_email(self, email: str) -> User | None: ...

    async def update(self, user: User) -> None:
        """Store the user's fields and replace its memberships. ``token_version`` never
        decreases, and a user read before the latest password change (an older version)
        does not overwrite the newer password hash."""
        ...

    async def delete(self, user_id: uuid.UUID) -> None: ...

    async def list(self, filter: UserFilter, page: PageRequest) -> Page[User]: ...


class RefreshTokenRepository(Protocol):
    async def add(self, token: RefreshToken) -> None: ...

    async def find(self, token_hash: bytes) -> RefreshToken | None:
        """The token, locked until the unit of work ends: two refreshes with one token run
        one after the other, and the second sees the first one's revocation."""
        ...

    async def revoke(self, token_id: uuid.UUID) -> None: ...

    async def revoke_all(self, user_id: uuid.UUID) -> None: ...


class PasswordHasher(Protocol):
    """A memory-hard KDF; slow on purpose, so implementations run off the event loop."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...


class TokenCodec(Protocol):
    """Signs and checks access tokens; ``decode`` raises Unauthenticated for any defect."""

    def encode(self, claims: AccessClaims) -> str: ...

    def decode(self, token: str) -> AccessClaims: ...


class AttemptThrottle(Protocol):
    """Counts attempts per key (an account, an address) and locks keys that had too many,
    after the rule of ``domain.throttling``; shared by every replica where it can be."""

    async def attempt(self, keys: Sequence[ThrottleKey]) -> timedelta | None:
        """None: go ahead (one attempt is counted on every key). Otherwise how long the
        caller must wait: a key is locked (nothing counted), or this attempt was one too
        many and locked it."""
        ...

    async def succeeded(self, reset: Sequence[ThrottleKey], refund: Sequence[ThrottleKey]) -> None:
        """The attempt succeeded: clear the counts of ``reset``, hand one back on ``refund``."""
        ...


class AccessUnitOfWork(Transaction, Protocol):
    """A transaction over users and their tokens (and the clients memberships name)."""

    clients: ClientRepository
    users: UserRepository
    refresh_tokens: RefreshTokenRepository
