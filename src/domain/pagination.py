"""Keyset pagination (AIP-158): page sizes, and opaque page tokens signed by the server.

A page token carries a keyset cursor (the sort key of the last item served). Tokens are
signed with HMAC-SHA256 under a server key and bound to the listing that made them (the
RPC and its filters), so a caller can neither forge a cursor nor carry one to another
listing; every field of a cursor is range-checked again when it is read, so even a token
we signed ourselves never reaches the database with a value it cannot take.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from domain.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_TOKEN_LENGTH = 512
FIELD = "page_token"

T = TypeVar("T")

_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_MAC_CONTEXT = b"tracker.page-token.v1\x00"
MIN_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class PageRequest:
    """At most ``size`` items whose sort key is strictly after ``after`` (None: from the start)."""

    size: int = DEFAULT_PAGE_SIZE
    after: str | None = None


def page_size(value: int) -> int:
    """0 means the default, above the maximum is clamped, negative is an error."""
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return DEFAULT_PAGE_SIZE if value == 0 else min(value, MAX_PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_after: str | None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _malformed() -> InvalidArgument:
    return InvalidArgument(FIELD, "malformed page token")


class PageTokens:
    """Makes and checks page tokens: ``<key id>.<cursor>.<HMAC-SHA256>``.

    ``scope`` names the listing (RPC and filters); the MAC covers it, so a token is valid
    only where it was made. ``keys`` maps key ids to secrets: ``active`` signs, every key
    verifies, so a new key can be rolled out before the old one is dropped.
    """

    def __init__(self, keys: Mapping[str, bytes], active: str) -> None:
        if active not in keys:
            raise ValueError(f"active page token key {active!r} is not among the keys")
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"page token key id {key_id!r}: 1..32 of [A-Za-z0-9_-]")
            if len(key) < MIN_KEY_BYTES:
                raise ValueError(f"page token key {key_id!r}: at least {MIN_KEY_BYTES} bytes")
        self._keys = dict(keys)
        self._active = active

    def _mac(self, key_id: str, payload: str, scope: str) -> bytes:
        message = _MAC_CONTEXT + f"{scope}\x00{key_id}\x00{payload}".encode()
        return hmac.new(self._keys[key_id], message, hashlib.sha256).digest()

    def encode(self, after: str, scope: str) -> str:
        payload = _b64(json.dumps({"a": after}, separators=(",", ":")).encode())
        mac = self._mac(self._active, payload, scope)
        return f"{self._active}.{payload}.{_b64(mac)}"

    def decode(self, token: str, scope: str) -> str:
        """The cursor of a token this server made for ``scope``; else INVALID_ARGUMENT."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise _malformed()
        parts = token.split(".")
        if len(parts) != 3:
            raise _malformed()
        key_id, payload, mac_text = parts
        try:
            mac = _unb64(mac_text)
            _unb64(payload)
        except (ValueError, binascii.Error):
            raise _malformed() from None
        if key_id not in self._keys:
            raise InvalidArgument(
                FIELD, "page token signed with an unknown or retired key; list from the start"
            )
        if not hmac.compare_digest(mac, self._mac(key_id, payload, scope)):
            raise InvalidArgument(
                FIELD, "page token is not valid for this listing (altered, or made for another "
                "request or filter)",
            )  # fmt: skip
        try:
            after = json.loads(_unb64(payload))["a"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _malformed() from None
        if not isinstance(after, str) or not after:
            raise _malformed()
        return after

    def request(self, size: int, token: str, scope: str) -> PageRequest:
        """The page a List request asks for (its ``page_size`` and ``page_token``)."""
        return PageRequest(size=page_size(size), after=self.decode(token, scope) if token else None)

    def next_token(self, page: Page[Any], scope: str) -> str:
        """``next_page_token`` of a page: empty on the last one."""
        return self.encode(page.next_after, scope) if page.next_after else ""


# -- cursor fields, range-checked when a cursor is read ---------------------------------------

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _out_of_range(what: str) -> InvalidArgument:
    return InvalidArgument(FIELD, f"page token cursor out of range ({what})")


def cursor_parts(after: str, count: int, sep: str = "|") -> list[str]:
    parts = after.split(sep)
    if len(parts) != count:
        raise _malformed()
    return parts


def cursor_id(text: str) -> uuid.UUID:
    """A cursor id: a UUID in its canonical form."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        raise _out_of_range("id") from None
    if str(value) != text.lower():
        raise _out_of_range("id")
    return value


def cursor_time(text: str) -> datetime:
    """A cursor instant: ISO 8601 with an offset, representable in UTC."""
    try:
        value = datetime.fromisoformat(text)
        if value.tzinfo is None:
            raise ValueError("naive")
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise _out_of_range("time") from None
    return value


def cursor_int32(text: str) -> int:
    """A cursor integer that fits PostgreSQL's ``integer``."""
    if len(text) > 11:
        raise _out_of_range("integer")
    try:
        value = int(text)
    except ValueError:
        raise _out_of_range("integer") from None
    if not INT32_MIN <= value <= INT32_MAX:
        raise _out_of_range("integer")
    return value
