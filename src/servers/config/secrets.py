"""The secrets of the security settings, decoded and checked: the JWT signing key, the KEK
ring sealing private keys and the keys signing page tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac

from servers.config.base import ConfigError
from servers.config.components import DetectorSettings, SecuritySettings

# Used only in development, never in production: tokens signed with it are worthless.
DEVELOPMENT_SIGNING_KEY = "tracker-services-development-only-signing-key-0000"

DEVELOPMENT_KEK_RING = "dev=" + "ZGV2ZWxvcG1lbnQtb25seS1rZWstMDAwMDAwMDAwMDA="


def kek_ring(s: SecuritySettings) -> tuple[dict[str, bytes], str]:
    """The KEK ring and the active KEK id; like the signing key, required in production."""
    text = s.kek_ring.get_secret_value()
    if not text:
        if s.environment == "production":
            raise ConfigError(
                "production needs a KEK ring: set TRACKER_KEK_RING or TRACKER_KEK_RING_FILE"
            )
        text = DEVELOPMENT_KEK_RING
    ring: dict[str, bytes] = {}
    for item in text.split(","):
        kek_id, sep, b64 = item.strip().partition("=")
        try:
            key = base64.b64decode(b64, validate=True) if sep else b""
        except ValueError:
            key = b""
        if not kek_id or len(key) != 32:
            raise ConfigError(f"kek_ring: entry {kek_id or item!r} must be id=base64(32 bytes)")
        ring[kek_id] = key
    active = s.kek_active_id or next(iter(ring))
    if active not in ring:
        raise ConfigError(f"kek_active_id {active!r} is not in the KEK ring")
    return ring, active


def page_token_keys(s: SecuritySettings) -> tuple[dict[str, bytes], str]:
    """The keys signing page tokens and the id of the one that signs new tokens.

    Unset, one key is derived from the JWT signing key (HMAC-SHA256 under a label of its
    own, so neither key reveals the other); its id is a digest of it, so a token made before
    the signing key changed is refused as made with a retired key.
    """
    text = s.page_token_keys.get_secret_value().strip()
    if not text:
        derived = hmac.new(signing_key(s), b"tracker.v1 page tokens", hashlib.sha256).digest()
        key_id = "d" + hashlib.sha256(derived).hexdigest()[:12]
        return {key_id: derived}, key_id
    ring: dict[str, bytes] = {}
    for item in text.split(","):
        key_id, sep, b64 = item.strip().partition("=")
        try:
            key = base64.b64decode(b64, validate=True) if sep else b""
        except ValueError:
            key = b""
        valid_id = (
            0 < len(key_id) <= 32
            and key_id.isascii()
            and key_id.replace("-", "").replace("_", "").isalnum()
        )
        if not valid_id or len(key) < 32:
            raise ConfigError(
                f"page_token_keys: entry {key_id or item!r} must be id=base64(>= 32 bytes), "
                "id of 1..32 letters, digits, '-' or '_'"
            )
        ring[key_id] = key
    return ring, next(iter(ring))


def signing_key(s: SecuritySettings) -> bytes:
    """The JWT signing key (from its file if named); a development default only outside
    production. A missing or short key in production is a start-up error."""
    key = s.jwt_signing_key.get_secret_value()
    if not key:
        if s.environment == "production":
            raise ConfigError(
                "production needs a JWT signing key: set TRACKER_JWT_SIGNING_KEY or "
                "TRACKER_JWT_SIGNING_KEY_FILE"
            )
        key = DEVELOPMENT_SIGNING_KEY
    if len(key.encode()) < 32:
        raise ConfigError("the JWT signing key must have at least 32 bytes")
    return key.encode()


def check_secrets(s: SecuritySettings) -> None:
    """Every secret a process needs, checked at start. In production the published
    development signing key or KEK, and a signing key equal to a KEK (one leak would expose
    both), are refused with a ConfigError saying which and what to do."""
    key = signing_key(s)
    ring, _ = kek_ring(s)
    page_token_keys(s)
    if s.environment != "production":
        return
    advice = "generate one with: head -c 32 /dev/urandom | base64"
    if key == DEVELOPMENT_SIGNING_KEY.encode():
        raise ConfigError(
            "the JWT signing key is the published development key: anyone could mint tokens; "
            + advice
        )
    dev_kek = base64.b64decode(DEVELOPMENT_KEK_RING.partition("=")[2])
    for kek_id, kek in ring.items():
        if kek == dev_kek:
            raise ConfigError(
                f"KEK {kek_id!r} is the published development KEK: sealed private keys would "
                "be readable by anyone; " + advice
            )
        if key in (kek, base64.b64encode(kek)):
            raise ConfigError(
                f"the JWT signing key equals KEK {kek_id!r}: use two independent secrets; " + advice
            )


def device_keys(d: DetectorSettings, s: SecuritySettings) -> tuple[dict[int, bytes], int]:
    """The keys of device ids and the id of the active one. Unset: one key (id 1) derived
    from the JWT signing key under a label of its own (set your own in production: changing
    the JWT key would then change every device's keyed id)."""
    text = d.device_keys.get_secret_value().strip()
    if not text:
        derived = hmac.new(signing_key(s), b"tracker.v1 device ids", hashlib.sha256).digest()
        return {1: derived}, 1
    ring: dict[int, bytes] = {}
    for item in text.split(","):
        key_id, sep, b64 = item.strip().partition("=")
        try:
            key = base64.b64decode(b64, validate=True) if sep else b""
            number = int(key_id)
        except ValueError:
            key, number = b"", 0
        if not 1 <= number <= 32767 or len(key) < 32:
            raise ConfigError(
                f"device_keys: entry {key_id or item!r} must be id=base64(>= 32 bytes), "
                "id a number 1..32767"
            )
        ring[number] = key
    active = d.device_key_active_id or next(iter(ring))
    if active not in ring:
        raise ConfigError(f"device_key_active_id {active} is not among device_keys")
    return ring, active
