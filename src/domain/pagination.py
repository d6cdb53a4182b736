"""Keyset pagination (AIP-158): page sizes and opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """At most ``size`` items whose sort key is strictly after ``after`` (None: from the start)."""

    size: int = DEFAULT_PAGE_SIZE
    after: str | None = None

    @classmethod
    def from_wire(cls, page_size: int, page_token: str, filter_key: str) -> PageRequest:
        """0 means the default, above the maximum is clamped, negative is an error.

        ``filter_key`` identifies the filters of the listing: a token from a listing with
        other filters is rejected, so a page never mixes two result sets.
        """
        if page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = DEFAULT_PAGE_SIZE if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
        return cls(size=size, after=decode_token(page_token, filter_key) if page_token else None)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_after: str | None

    def next_token(self, filter_key: str) -> str:
        return encode_token(self.next_after, filter_key) if self.next_after else ""


def _fingerprint(filter_key: str) -> str:
    return hashlib.sha256(filter_key.encode()).hexdigest()[:16]


def encode_token(after: str, filter_key: str) -> str:
    raw = json.dumps({"a": after, "f": _fingerprint(filter_key)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


MAX_TOKEN_LENGTH = 512


def decode_token(token: str, filter_key: str) -> str:
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidArgument("page_token", "malformed page token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        after, fingerprint = data["a"], data["f"]
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError):
        raise InvalidArgument("page_token", "malformed page token") from None
    if not isinstance(after, str) or fingerprint != _fingerprint(filter_key):
        raise InvalidArgument("page_token", "page token does not belong to this listing")
    return after
