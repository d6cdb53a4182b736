"""Password hashing (Argon2id, memory-hard) and access tokens (JWT, HS256)."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from datetime import UTC, datetime

import argon2
import jwt

from domain.access import AccessClaims
from domain.errors import Unauthenticated

ISSUER = "tracker-services"
AUDIENCE = "tracker.v1"
ALGORITHM = "HS256"
MIN_KEY_BYTES = 32


class Argon2PasswordHasher:
    """argon2-cffi's RFC 9106 low-memory profile (64 MiB, t=3); runs in a worker thread."""

    def __init__(self, hasher: argon2.PasswordHasher | None = None) -> None:
        self._hasher = hasher or argon2.PasswordHasher()

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

        return await asyncio.to_thread(check)


class JwtTokenCodec:
    """HS256 only: tokens with another algorithm (``none`` included) are rejected."""

    def __init__(self, signing_key: bytes, verified_cache: int = 10_000) -> None:
        if len(signing_key) < MIN_KEY_BYTES:
            raise ValueError(f"the JWT signing key must have at least {MIN_KEY_BYTES} bytes")
        self._key = signing_key
        # Tokens whose signature was checked, with their claims: a client sends the same
        # token on every call for 15 minutes, and HMAC plus JSON parsing was an eighth of the
        # query server's time per call. Expiry is still checked on every use.
        self._verified: OrderedDict[str, AccessClaims] = OrderedDict()
        self._verified_max = verified_cache

    def encode(self, claims: AccessClaims) -> str:
        return jwt.encode(
            {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": str(claims.user_id),
                "jti": claims.token_id,
                "typ": claims.kind,
                "iat": int(claims.issued_at.timestamp()),
                "exp": int(claims.expires_at.timestamp()),
            },
            self._key,
            algorithm=ALGORITHM,
        )

    def decode(self, token: str) -> AccessClaims:
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at <= datetime.now(UTC):
                del self._verified[token]
                raise Unauthenticated("token expired")
            return known
        claims = self._decode(token)
        if self._verified_max:
            self._verified[token] = claims
            while len(self._verified) > self._verified_max:
                self._verified.popitem(last=False)
        return claims

    def _decode(self, token: str) -> AccessClaims:
        try:
            data = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "jti", "typ"]},
            )
            return AccessClaims(
                user_id=uuid.UUID(data["sub"]),
                token_id=str(data["jti"]),
                kind=str(data["typ"]),
                issued_at=datetime.fromtimestamp(data["iat"], UTC),
                expires_at=datetime.fromtimestamp(data["exp"], UTC),
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise Unauthenticated("invalid token") from None
