"""Who may do what: users, their client memberships and roles, and the caller of a use case.

ADMIN (a user flag) may do everything. Per client, CLIENT_ADMIN manages the setup and users of
that client and VIEWER reads its data. A resource of a client the caller cannot read is
reported exactly like a missing one (NotFound), so nobody learns that it exists.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from domain.errors import InvalidArgument, NotFound, PermissionDenied

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
MAX_EMAIL_LENGTH = 320  # 64 + "@" + 255; the users table checks the same
_EMAIL_RE = re.compile(r"^[^@\s\x00]{1,64}@[^@\s\x00]{1,255}\.[^@\s\x00]{2,63}$")


class Role(enum.Enum):
    """A user's role within one client."""

    CLIENT_ADMIN = "CLIENT_ADMIN"
    VIEWER = "VIEWER"


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL_RE.match(email):
        raise InvalidArgument("email", "not an email address")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidArgument("password", f"at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidArgument("password", f"at most {MAX_PASSWORD_LENGTH} characters")


def _frozen(m: Mapping[uuid.UUID, Role]) -> Mapping[uuid.UUID, Role]:
    return MappingProxyType(dict(m))


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """An account; ``password_hash`` is opaque here (the hasher adapter owns its format)."""

    id: uuid.UUID
    email: str
    display_name: str = ""
    password_hash: str = field(repr=False)
    admin: bool = False
    memberships: Mapping[uuid.UUID, Role] = field(default_factory=dict)
    create_time: datetime
    update_time: datetime
    # Raised by every password change or reset; tokens carry the version they were issued
    # under, and a token of an older version is no longer accepted. It never decreases.
    token_version: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "email", normalize_email(self.email))
        object.__setattr__(self, "memberships", _frozen(self.memberships))
        if len(self.display_name) > 200 or "\x00" in self.display_name:
            raise InvalidArgument("display_name", "at most 200 characters, no NUL")

    def principal(self) -> Principal:
        return Principal(user_id=self.id, admin=self.admin, memberships=self.memberships)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, as use cases see it."""

    user_id: uuid.UUID
    admin: bool = False
    memberships: Mapping[uuid.UUID, Role] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "memberships", _frozen(self.memberships))

    @classmethod
    def system(cls) -> Principal:
        """The operator at the command line (trackerctl): an administrator."""
        return cls(user_id=uuid.UUID(int=0), admin=True)

    def can_read(self, client_id: uuid.UUID) -> bool:
        return self.admin or client_id in self.memberships

    def can_manage(self, client_id: uuid.UUID) -> bool:
        return self.admin or self.memberships.get(client_id) is Role.CLIENT_ADMIN

    def readable_clients(self) -> frozenset[uuid.UUID] | None:
        """The clients whose data the caller may see; None means every client."""
        return None if self.admin else frozenset(self.memberships)

    def managed_clients(self) -> frozenset[uuid.UUID] | None:
        if self.admin:
            return None
        return frozenset(c for c, r in self.memberships.items() if r is Role.CLIENT_ADMIN)


def require_read(caller: Principal, client_id: uuid.UUID, kind: str, ident: object) -> None:
    if not caller.can_read(client_id):
        raise NotFound(kind, str(ident))


def require_manage(caller: Principal, client_id: uuid.UUID, kind: str, ident: object) -> None:
    """NotFound if the caller cannot even see it, PermissionDenied if they only may read."""
    require_read(caller, client_id, kind, ident)
    if not caller.can_manage(client_id):
        raise PermissionDenied(f"managing this {kind} needs CLIENT_ADMIN of its client")


def require_admin(caller: Principal, action: str) -> None:
    if not caller.admin:
        raise PermissionDenied(f"{action} needs ADMIN")


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a signed access token says: who, which kind of token, valid until when."""

    user_id: uuid.UUID
    token_id: str
    kind: str  # "access" (short-lived, from Login/Refresh) or "service" (minted by trackerctl)
    issued_at: datetime
    expires_at: datetime
    token_version: int = 0  # the user's token version at issue; tokens from before had none


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime


@dataclass(frozen=True, slots=True)
class RefreshToken:
    """A stored refresh token: only its hash is kept."""

    id: uuid.UUID
    user_id: uuid.UUID
    token_hash: bytes
    expires_at: datetime
    revoked: bool = False
