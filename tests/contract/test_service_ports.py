"""The contracts of the ports that are no storage (clock, password hasher, token codec, key
pairs, sealer), on the in-memory fakes and the production adapters alike."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import argon2
import pytest

from adapters.clock import SystemClock
from adapters.keys import AesGcmSealer, FindMyKeyPairFactory
from adapters.security import Argon2PasswordHasher, JwtTokenCodec
from domain.access import AccessClaims
from domain.errors import InvalidArgument, Unauthenticated
from domain.model import SealedSecret
from domain.ports.access import PasswordHasher, TokenCodec
from domain.ports.common import Clock
from domain.ports.keys import KeyPairFactory, SecretSealer
from tests.unit.fakes.access import FakePasswordHasher, FakeTokenCodec
from tests.unit.fakes.base import FakeClock
from tests.unit.fakes.keys import FakeKeyPairFactory, FakeSealer


@pytest.fixture(params=["fake", "system"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return FakeClock() if request.param == "fake" else SystemClock()


def test_the_clock_tells_timezone_aware_utc(clock: Clock) -> None:
    assert clock.now().tzinfo is UTC


def test_the_fake_clock_is_settable_and_refuses_naive_times() -> None:
    clock = FakeClock(datetime(2025, 6, 1, 12, tzinfo=UTC))
    assert clock.advance(timedelta(minutes=5)) == datetime(2025, 6, 1, 12, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        clock.set(datetime(2025, 1, 1))


@pytest.fixture(params=["fake", "argon2"])
def hasher(request: pytest.FixtureRequest) -> PasswordHasher:
    if request.param == "fake":
        return FakePasswordHasher()
    cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    return Argon2PasswordHasher(cheap)


async def test_the_hasher_verifies_only_the_hashed_password(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash("correct horse battery")
    assert "correct horse battery" not in hashed
    assert await hasher.verify(hashed, "correct horse battery")
    assert not await hasher.verify(hashed, "correct horse batteri")
    assert not await hasher.verify("garbage", "correct horse battery")


KEY = b"k" * 32


def make_codec(kind: str, key: bytes = KEY) -> TokenCodec:
    return FakeTokenCodec(FakeClock(), key=key) if kind == "fake" else JwtTokenCodec(key)


def claims(expires_in: timedelta = timedelta(minutes=5)) -> AccessClaims:
    # Both codecs judge expiry by "now": the fake by its clock (START), JWT by the system's.
    now = datetime.now(UTC).replace(microsecond=0)
    start = max(now, FakeClock.START)
    return AccessClaims(
        user_id=uuid.uuid4(),
        token_id="t1",
        kind="access",
        issued_at=start,
        expires_at=start + expires_in,
    )


@pytest.mark.parametrize("kind", ["fake", "jwt"])
def test_the_codec_round_trips_its_claims(kind: str) -> None:
    codec = make_codec(kind)
    original = claims()
    assert codec.decode(codec.encode(original)) == original


@pytest.mark.parametrize("kind", ["fake", "jwt"])
@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("0" if t[-1] != "0" else "1"),
        lambda t: "x" + t,
        lambda t: t.split(".")[0],
        lambda t: "",
        lambda t: "not a token at all",
    ],
)
def test_the_codec_rejects_tampered_or_unknown_tokens(kind: str, tamper: Any) -> None:
    codec = make_codec(kind)
    with pytest.raises(Unauthenticated):
        codec.decode(tamper(codec.encode(claims())))


@pytest.mark.parametrize("kind", ["fake", "jwt"])
def test_the_codec_rejects_tokens_signed_with_another_key(kind: str) -> None:
    token = make_codec(kind, b"o" * 32).encode(claims())
    with pytest.raises(Unauthenticated):
        make_codec(kind).decode(token)


def test_the_fake_codec_rejects_expired_tokens_by_its_clock() -> None:
    clock = FakeClock()
    codec = FakeTokenCodec(clock)
    start = FakeClock.START
    token = codec.encode(AccessClaims(uuid.uuid4(), "t1", "access", start, start + timedelta(5)))
    clock.advance(timedelta(days=5, seconds=-1))
    codec.decode(token)
    clock.advance(timedelta(seconds=1))
    with pytest.raises(Unauthenticated):
        codec.decode(token)


KEY_PAIRS: dict[str, Callable[[], KeyPairFactory]] = {
    "fake": FakeKeyPairFactory,
    "findmy": FindMyKeyPairFactory,
}


@pytest.mark.parametrize("kind", sorted(KEY_PAIRS))
def test_key_pairs_are_distinct_and_derivable(kind: str) -> None:
    factory = KEY_PAIRS[kind]()
    pairs = [factory.generate() for _ in range(20)]
    assert len({private for private, _ in pairs}) == 20
    assert len({public.value for _, public in pairs}) == 20
    for private, public in pairs:
        assert len(private) == 28
        assert factory.public_of(private) == public


SHORT_KEY_TAKEN = pytest.mark.xfail(
    strict=True, reason="FindMyKeyPairFactory.public_of takes a 27-byte key (found here)"
)


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        (kind, bad)
        for kind in sorted(KEY_PAIRS)
        for bad in (bytes(28), b"\xff" * 28, b"\x01" * 29, b"")
    ]
    + [("fake", b"\x01" * 27), pytest.param("findmy", b"\x01" * 27, marks=SHORT_KEY_TAKEN)],
)
def test_what_is_no_private_key_is_refused(kind: str, bad: bytes) -> None:
    with pytest.raises(InvalidArgument) as exc:
        KEY_PAIRS[kind]().public_of(bad)
    assert [v.field for v in exc.value.violations] == ["private_key"]


def make_sealer(kind: str, key: bytes = b"\x07" * 32) -> SecretSealer:
    return FakeSealer(key=key) if kind == "fake" else AesGcmSealer({"k1": key}, "k1")


@pytest.mark.parametrize("kind", ["fake", "aes"])
@pytest.mark.parametrize(("plaintext", "context"), [(b"", b""), (b"\x00" * 28, b"ctx")])
def test_the_sealer_round_trips_under_its_context(
    kind: str, plaintext: bytes, context: bytes
) -> None:
    sealer = make_sealer(kind)
    sealed = sealer.seal(plaintext, context)
    assert sealed.kek_id == sealer.active_kek_id
    assert sealer.unseal(sealed, context) == plaintext
    with pytest.raises(ValueError, match="context"):
        sealer.unseal(sealed, context + b"x")


@pytest.mark.parametrize("kind", ["fake", "aes"])
def test_the_sealer_hides_the_plaintext_and_detects_tampering(kind: str) -> None:
    sealer = make_sealer(kind)
    secret = b"\x00" * 28
    sealed = sealer.seal(secret, b"ctx")
    assert secret not in sealed.ciphertext
    assert sealed != sealer.seal(secret, b"other")
    flipped = sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 1])
    for bad in (
        SealedSecret(sealed.kek_id, flipped),
        SealedSecret(sealed.kek_id, sealed.ciphertext[:-1]),
        SealedSecret("other", sealed.ciphertext),
    ):
        with pytest.raises((ValueError, RuntimeError)):
            sealer.unseal(bad, b"ctx")
    with pytest.raises(ValueError, match="does not open"):
        make_sealer(kind, b"\x08" * 32).unseal(sealed, b"ctx")
