"""Password hashing (Argon2id, memory-hard) and access tokens (JWT, HS256)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import argon2
import jwt

from adapters.clock import SystemClock
from domain.access import AccessClaims
from domain.errors import TooManyAttempts, Unauthenticated
from domain.ports.common import Clock

ISSUER = "tracker-services"
AUDIENCE = "tracker.v1"
ALGORITHM = "HS256"
MIN_KEY_BYTES = 32
T = TypeVar("T")


class Argon2PasswordHasher:
    """argon2-cffi's RFC 9106 low-memory profile (64 MiB, t=3), on a pool of its own.

    At most ``concurrency`` hashes run at once (each holds 64 MiB while it runs, so memory
    for hashing is bounded by ``concurrency`` x 64 MiB), and at most ``queue`` more wait;
    beyond that a call is refused at once with TooManyAttempts, so a flood of sign-ins
    neither grows memory nor queues without end."""

    def __init__(
        self, hasher: argon2.PasswordHasher | None = None, concurrency: int = 2, queue: int = 32
    ) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be >= 1 and queue >= 0")
        self._hasher = hasher or argon2.PasswordHasher()
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="argon2")
        self._capacity = concurrency + queue
        self._pending = 0
        self.peak_running = 0  # for tests and benchmarks: most hashes seen running at once
        self._running = 0
        self._lock = threading.Lock()

    async def _run(self, work: Callable[[], T]) -> T:
        if self._pending >= self._capacity:
            raise TooManyAttempts("too many password checks in progress", timedelta(seconds=1))
        self._pending += 1

        def counted() -> T:
            with self._lock:
                self._running += 1
                self.peak_running = max(self.peak_running, self._running)
            try:
                return work()
            finally:
                with self._lock:
                    self._running -= 1

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, counted)
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
                return False

        return await self._run(check)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class JwtTokenCodec:
    """HS256 only: tokens with another algorithm (``none`` included) are rejected."""

    def __init__(
        self, signing_key: bytes, verified_cache: int = 10_000, clock: Clock | None = None
    ) -> None:
        self._clock: Clock = clock or SystemClock()
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
                "ver": claims.token_version,
            },
            self._key,
            algorithm=ALGORITHM,
        )

    def decode(self, token: str) -> AccessClaims:
        known = self._verified.get(token)
        if known is not None:
            if known.expires_at <= self._clock.now():
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
            version = data.get("ver", 0)  # tokens issued before versions existed: 0
            if type(version) is not int or version < 0:
                raise ValueError("ver")
            return AccessClaims(
                user_id=uuid.UUID(data["sub"]),
                token_id=str(data["jti"]),
                kind=str(data["typ"]),
                issued_at=datetime.fromtimestamp(data["iat"], UTC),
                expires_at=datetime.fromtimestamp(data["exp"], UTC),
                token_version=version,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except (jwt.InvalidTokenError, ValueError, TypeError):
            raise Unauthenticated("invalid token") from None
