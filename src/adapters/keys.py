"""Key pairs from the ``findmy`` package, and AES-GCM sealing under a rotating KEK ring."""

from __future__ import annotations

import os
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from findmy import KeyPair

from domain.errors import InvalidArgument
from domain.model import AdvertisementKey, SealedSecret

_NONCE = 12


class FindMyKeyPairFactory:
    """Key generation and public-key derivation exactly as findmy (FindMy.py) does them."""

    def generate(self) -> tuple[bytes, AdvertisementKey]:
        while True:
            try:
                pair = KeyPair.new()
            except ValueError:  # 28 random bytes beyond the curve order: draw again
                continue
            return pair.private_key_bytes, AdvertisementKey(pair.adv_key_bytes)

    def public_of(self, private_key: bytes) -> AdvertisementKey:
        try:
            pair = KeyPair(private_key)
        except ValueError:
            raise InvalidArgument("private_key", "not a valid P-224 private key") from None
        return AdvertisementKey(pair.adv_key_bytes)


class UnknownKek(RuntimeError):
    pass


class AesGcmSealer:
    """AES-256-GCM with a random 96-bit nonce; the KEK id and the caller's context are the
    associated data. New secrets use ``active``; any KEK of the ring opens old ones, so a KEK
    is rotated by adding a new one, making it active, and re-sealing at leisure."""

    def __init__(self, keks: Mapping[str, bytes], active: str) -> None:
        if active not in keks:
            raise ValueError(f"active KEK {active!r} is not in the KEK ring")
        for kek_id, kek in keks.items():
            if len(kek) != 32:
                raise ValueError(f"KEK {kek_id!r} must be 32 bytes")
        self._aead = {kek_id: AESGCM(kek) for kek_id, kek in keks.items()}
        self.active_kek_id = active

    def seal(self, plaintext: bytes, context: bytes) -> SealedSecret:
        nonce = os.urandom(_NONCE)
        aad = self.active_kek_id.encode() + b"\x00" + context
        ct = self._aead[self.active_kek_id].encrypt(nonce, plaintext, aad)
        return SealedSecret(self.active_kek_id, nonce + ct)

    def unseal(self, sealed: SealedSecret, context: bytes) -> bytes:
        aead = self._aead.get(sealed.kek_id)
        if aead is None:
            raise UnknownKek(f"KEK {sealed.kek_id!r} is not in the KEK ring")
        nonce, ct = sealed.ciphertext[:_NONCE], sealed.ciphertext[_NONCE:]
        try:
            return aead.decrypt(nonce, ct, sealed.kek_id.encode() + b"\x00" + context)
        except InvalidTag:
            raise ValueError("sealed secret does not open with its KEK and context") from None
