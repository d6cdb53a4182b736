"""Location reports encrypted exactly as the Find My network does it: ephemeral P-224 ECDH
with the tag's public key, X9.63 KDF (SHA-256, counter 1, shared info = ephemeral point),
AES-GCM with the KDF's first 16 bytes as key and last 16 as IV."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

APPLE_EPOCH = datetime(2001, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PlainReport:
    time: datetime
    latitude: float
    longitude: float
    confidence: int
    accuracy_m: int
    status: int = 0


def tag_public_key(advertisement_key: bytes) -> ec.EllipticCurvePublicKey:
    """The tag's public point from its 28-byte x coordinate (either y gives the same ECDH x)."""
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP224R1(), b"\x02" + advertisement_key)


def encrypt_report(
    advertisement_key: bytes, report: PlainReport, *, long_form: bool = False
) -> bytes:
    """The payload Apple returns for one report: 88 bytes, or 89 (newer devices) with
    ``long_form``."""
    eph = ec.generate_private_key(ec.SECP224R1())
    eph_point = eph.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    shared = eph.exchange(ec.ECDH(), tag_public_key(advertisement_key))
    derived = hashlib.sha256(shared + b"\x00\x00\x00\x01" + eph_point).digest()
    key, iv = derived[:16], derived[16:]
    plain = struct.pack(">ii", round(report.latitude * 1e7), round(report.longitude * 1e7))
    plain += bytes([min(255, max(0, report.accuracy_m)), report.status & 0xFF])
    encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    ciphertext = encryptor.update(plain) + encryptor.finalize()
    seconds = int((report.time - APPLE_EPOCH).total_seconds())
    head = seconds.to_bytes(4, "big") + (b"\x00" if long_form else b"")
    return head + bytes([report.confidence]) + eph_point + ciphertext + encryptor.tag
