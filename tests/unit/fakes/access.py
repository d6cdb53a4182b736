"""Fakes of the access ports (``domain.ports.access``): users, refresh tokens, and
deterministic stand-ins for argon2 and JWT with the same contracts.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from domain.access import AccessClaims, RefreshToken, User
from domain.errors import (
    AlreadyExists,
    NotFound,
    Unauthenticated,
)
from domain.pagination import Page, PageRequest
from domain.ports.access import UserFilter
from tests.unit.fakes.base import (
    FakeClock,
    _drop,
    _keyset_page,
    _missing_parent,
)

if TYPE_CHECKING:
    from tests.unit.fakes.common import FakeUnitOfWork


class FakeUserRepository:
    """Users with their memberships (adapter: ``users`` + ``memberships``, both cascading)."""

    kind: ClassVar[str] = "user"

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[uuid.UUID, User]:
        return self._uow.tables.users

    def _check(self, user: User) -> None:
        """users_email_key, then memberships.client_id REFERENCES clients."""
        for other in self._rows.values():
            if other.email == user.email and other.id != user.id:
                raise AlreadyExists(self.kind, "email", user.email)
        clients = self._uow.tables.clients
        for client_id in user.memberships:
            if client_id not in clients:
                raise _missing_parent("membership", "client_id", client_id, "clients")

    async def add(self, user: User) -> None:
        if user.id in self._rows:
            raise AlreadyExists(self.kind, "id", str(user.id))
        self._check(user)
        self._rows[user.id] = user

    async def get(self, user_id: uuid.UUID) -> User:
        try:
            return self._rows[user_id]
        except KeyError:
            raise NotFound(self.kind, str(user_id)) from None

    async def find_by_email(self, email: str) -> User | None:
        return next((u for u in self._rows.values() if u.email == email), None)

    async def update(self, user: User) -> None:
        if user.id not in self._rows:
            raise NotFound(self.kind, str(user.id))
        self._check(user)
        # As in PostgreSQL: token_version never decreases, and a writer that read the user
        # before the latest password change keeps the newer password hash.
        stored = self._rows[user.id]
        if user.token_version < stored.token_version:
            user = dataclasses.replace(
                user, token_version=stored.token_version, password_hash=stored.password_hash
            )
        self._rows[user.id] = user

    async def delete(self, user_id: uuid.UUID) -> None:
        if user_id not in self._rows:
            raise NotFound(self.kind, str(user_id))
        del self._rows[user_id]
        _drop(self._uow.tables.refresh_tokens, lambda rt: rt.user_id != user_id)

    async def list(self, filter: UserFilter, page: PageRequest) -> Page[User]:
        visible = filter.visible_clients
        return _keyset_page(
            (
                u
                for u in self._rows.values()
                if visible is None or not visible.isdisjoint(u.memberships)
            ),
            page,
        )


class FakeRefreshTokenRepository:
    """Stored refresh tokens, found by hash; revoking keeps the row, marked revoked."""

    kind: ClassVar[str] = "refresh token"

    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[uuid.UUID, RefreshToken]:
        return self._uow.tables.refresh_tokens

    async def add(self, token: RefreshToken) -> None:
        if token.id in self._rows:
            raise AlreadyExists(self.kind, "id", str(token.id))
        if any(t.token_hash == token.token_hash for t in self._rows.values()):
            raise AlreadyExists(self.kind, "token_hash", token.token_hash.hex())
        if token.user_id not in self._uow.tables.users:
            raise _missing_parent(self.kind, "user_id", token.user_id, "users")
        self._rows[token.id] = token

    async def find(self, token_hash: bytes) -> RefreshToken | None:
        return next((t for t in self._rows.values() if t.token_hash == token_hash), None)

    async def revoke(self, token_id: uuid.UUID) -> None:
        """Like ``UPDATE ... WHERE id = $1``: an unknown id changes nothing."""
        token = self._rows.get(token_id)
        if token is not None:
            self._rows[token_id] = dataclasses.replace(token, revoked=True)

    async def revoke_all(self, user_id: uuid.UUID) -> None:
        for token in list(self._rows.values()):
            if token.user_id == user_id:
                self._rows[token.id] = dataclasses.replace(token, revoked=True)


class FakePasswordHasher:
    """Deterministic and fast: ``fake$`` + SHA-256 of the password. Counts its calls."""

    PREFIX = "fake$"

    def __init__(self) -> None:
        self.hashed = 0
        self.verified = 0

    async def hash(self, password: str) -> str:
        self.hashed += 1
        return self.PREFIX + hashlib.sha256(password.encode()).hexdigest()

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verified += 1
        expected = self.PREFIX + hashlib.sha256(password.encode()).hexdigest()
        return hmac.compare_digest(password_hash.encode(), expected.encode())


class FakeTokenCodec:
    """``base64(json claims).hmac`` with a fixed key; expiry judged by the given clock."""

    def __init__(self, clock: FakeClock, key: bytes = b"unit-test-key") -> None:
        self._clock, self._key = clock, key

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def encode(self, claims: AccessClaims) -> str:
        raw = json.dumps(
            {
                "sub": str(claims.user_id),
                "jti": claims.token_id,
                "kind": claims.kind,
                "iat": claims.issued_at.isoformat(),
                "exp": claims.expires_at.isoformat(),
                "ver": claims.token_version,
            },
            separators=(",", ":"),
        )
        body = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        return f"{body}.{self._sign(body)}"

    def decode(self, token: str) -> AccessClaims:
        body, _, signature = token.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise Unauthenticated("invalid token")
        try:
            data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            claims = AccessClaims(
                user_id=uuid.UUID(data["sub"]),
                token_id=data["jti"],
                kind=data["kind"],
                issued_at=datetime.fromisoformat(data["iat"]),
                expires_at=datetime.fromisoformat(data["exp"]),
                token_version=int(data.get("ver", 0)),
            )
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise Unauthenticated("invalid token") from None
        if claims.expires_at <= self._clock.now():
            raise Unauthenticated("token expired")
        return claims
