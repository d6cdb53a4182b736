"""Page sizes and opaque, signed page tokens (AIP-158), and the range checks of cursors."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidArgument
from domain.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_TOKEN_LENGTH,
    Page,
    PageRequest,
    PageTokens,
    cursor_id,
    cursor_int32,
    cursor_parts,
    cursor_time,
)

SCOPE = "tracker.v1.SetupQueryService/ListBrands?client_id=1"
TOKENS = PageTokens({"k1": b"a" * 32}, "k1")


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def fields_of(err: InvalidArgument) -> list[str]:
    return [v.field for v in err.violations]


def only_page_token_errors(token: str, scope: str = SCOPE) -> None:
    """A token is either accepted or refused with INVALID_ARGUMENT on page_token, nothing else."""
    fields: list[str] = []
    try:
        TOKENS.request(10, token, scope)
    except InvalidArgument as err:
        fields = fields_of(err)
    assert fields in ([], ["page_token"])


@pytest.mark.parametrize(
    ("page_size", "size"),
    [
        (0, DEFAULT_PAGE_SIZE),
        (1, 1),
        (50, 50),
        (999, 999),
        (MAX_PAGE_SIZE, MAX_PAGE_SIZE),
        (MAX_PAGE_SIZE + 1, MAX_PAGE_SIZE),
        (2**31 - 1, MAX_PAGE_SIZE),
    ],
)
def test_page_size_zero_means_default_and_large_is_clamped(page_size: int, size: int) -> None:
    assert TOKENS.request(page_size, "", SCOPE) == PageRequest(size=size, after=None)


def test_defaults_are_as_documented() -> None:
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (50, 1000)


@pytest.mark.parametrize("page_size", [-1, -50, -(2**31)])
def test_negative_page_size_is_invalid_argument(page_size: int) -> None:
    with pytest.raises(InvalidArgument) as exc:
        TOKENS.request(page_size, "", SCOPE)
    assert fields_of(exc.value) == ["page_size"]


def test_token_round_trips_the_cursor() -> None:
    after = str(uuid.uuid4())
    token = TOKENS.next_token(Page(items=[1, 2], next_after=after), SCOPE)
    assert token
    assert TOKENS.request(2, token, SCOPE) == PageRequest(size=2, after=after)


# 20 characters always fit: even escaped as JSON surrogate pairs (12 bytes each) the token
# stays under MAX_TOKEN_LENGTH. Real cursors are ids and times (under 100 ASCII characters).
@given(st.text(min_size=1, max_size=20), st.text())
def test_any_short_cursor_round_trips_through_a_token(after: str, scope: str) -> None:
    token = TOKENS.encode(after, scope)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert TOKENS.decode(token, scope) == after


@given(st.text(min_size=1, max_size=400), st.text(max_size=10))
def test_a_cursor_too_long_for_a_token_is_refused_as_malformed(after: str, scope: str) -> None:
    token = TOKENS.encode(after, scope)
    if len(token) <= MAX_TOKEN_LENGTH:
        assert TOKENS.decode(token, scope) == after
    else:
        with pytest.raises(InvalidArgument) as exc:
            TOKENS.decode(token, scope)
        assert fields_of(exc.value) == ["page_token"]


def test_token_is_url_safe_and_unpadded() -> None:
    token = TOKENS.encode(str(uuid.uuid4()), SCOPE)
    assert "=" not in token
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    assert set(token) <= set(alphabet)


def test_last_page_has_an_empty_next_token() -> None:
    assert TOKENS.next_token(Page(items=[1], next_after=None), SCOPE) == ""


def test_empty_token_starts_from_the_beginning() -> None:
    assert TOKENS.request(5, "", SCOPE).after is None


def test_token_from_another_listing_or_filter_is_rejected() -> None:
    token = TOKENS.encode(str(uuid.uuid4()), "tracker.v1.SetupQueryService/ListBrands?client_id=2")
    with pytest.raises(InvalidArgument) as exc:
        TOKENS.request(10, token, SCOPE)
    assert fields_of(exc.value) == ["page_token"]
    assert "not valid for this listing" in exc.value.violations[0].reason
    other_rpc = TOKENS.encode(str(uuid.uuid4()), "tracker.v1.SetupQueryService/ListClients?")
    with pytest.raises(InvalidArgument):
        TOKENS.request(10, other_rpc, "tracker.v1.UserQueryService/ListUsers")


def test_a_token_signed_with_another_key_is_rejected() -> None:
    forger = PageTokens({"k1": b"b" * 32}, "k1")
    with pytest.raises(InvalidArgument) as exc:
        TOKENS.request(10, forger.encode(str(uuid.uuid4()), SCOPE), SCOPE)
    assert fields_of(exc.value) == ["page_token"]


def test_an_altered_cursor_is_rejected() -> None:
    key_id, _, mac = TOKENS.encode(str(uuid.uuid4()), SCOPE).split(".")
    forged = b64(json.dumps({"a": f"{uuid.uuid4()}|0001-01-01T00:00:00+14:00|9|9"}).encode())
    with pytest.raises(InvalidArgument) as exc:
        TOKENS.request(10, f"{key_id}.{forged}.{mac}", SCOPE)
    assert fields_of(exc.value) == ["page_token"]


def test_keys_rotate_old_tokens_verify_until_their_key_is_dropped() -> None:
    old = PageTokens({"old": b"o" * 32}, "old")
    rotated = PageTokens({"new": b"n" * 32, "old": b"o" * 32}, "new")
    after = str(uuid.uuid4())
    token = old.encode(after, SCOPE)
    assert rotated.decode(token, SCOPE) == after
    assert rotated.encode(after, SCOPE).startswith("new.")
    dropped = PageTokens({"new": b"n" * 32}, "new")
    with pytest.raises(InvalidArgument) as exc:
        dropped.decode(token, SCOPE)
    assert "retired key" in exc.value.violations[0].reason


@pytest.mark.parametrize(
    ("keys", "active"),
    [({"k": b"short"}, "k"), ({"k": b"a" * 32}, "other"), ({"bad id!": b"a" * 32}, "bad id!")],
)
def test_weak_or_inconsistent_keys_are_refused(keys: dict[str, bytes], active: str) -> None:
    with pytest.raises(ValueError, match="key"):
        PageTokens(keys, active)


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "a",
        "abc$",
        "é",
        "..",
        "k1..",
        "k1.a.b.c",
        b64(b'{"a": "x"}'),
        "k1." + b64(b'{"a": "x"}'),
        "k1." + b64(b'{"a": "x"}') + ".",
        "k1." + b64(b'{"a": "x"}') + "." + b64(b"\0" * 32),
        "k1.!!!." + b64(b"\0" * 32),
        "nokey." + b64(b'{"a": "x"}') + "." + b64(b"\0" * 32),
        TOKENS.encode("x", SCOPE)[:-3],
        TOKENS.encode("x", SCOPE) + "!",
        TOKENS.encode("x", SCOPE) + "A",
        "k1." + "A" * 600 + ".AAAA",
    ],
)
def test_garbage_token_is_invalid_argument_on_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        TOKENS.request(10, token, SCOPE)
    assert fields_of(exc.value) == ["page_token"]


@given(st.text())
def test_any_text_token_gives_only_invalid_argument(token: str) -> None:
    only_page_token_errors(token)


@given(st.binary(), st.binary(max_size=40))
def test_any_bytes_in_a_token_give_only_invalid_argument(payload: bytes, mac: bytes) -> None:
    only_page_token_errors(f"k1.{b64(payload)}.{b64(mac)}")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "x"]) | st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=10,
)


@given(JSON)
def test_a_signed_payload_of_any_json_shape_gives_only_invalid_argument(value: object) -> None:
    """Even with the key (a leaked or buggy signer), a payload that is no cursor is refused."""
    payload = b64(json.dumps(value).encode())
    mac = b64(TOKENS._mac("k1", payload, SCOPE))
    only_page_token_errors(f"k1.{payload}.{mac}")


# -- cursor fields ----------------------------------------------------------------------------


def test_cursor_fields_read_back_what_the_adapters_write() -> None:
    tracker, t = uuid.uuid4(), datetime(2026, 12, 2, 19, 30, tzinfo=UTC)
    parts = cursor_parts(f"{tracker}|{t.isoformat()}|{-(2**31)}|{2**31 - 1}", 4)
    assert cursor_id(parts[0]) == tracker
    assert cursor_time(parts[1]) == t
    assert (cursor_int32(parts[2]), cursor_int32(parts[3])) == (-(2**31), 2**31 - 1)
    assert cursor_time(datetime.min.replace(tzinfo=UTC).isoformat()).year == 1


@pytest.mark.parametrize(
    ("read", "text"),
    [
        (cursor_id, "not-a-uuid"),
        (cursor_id, "{" + str(uuid.UUID(int=1)) + "}"),
        (cursor_id, "urn:uuid:" + str(uuid.UUID(int=1))),
        (cursor_id, str(uuid.UUID(int=1)).replace("-", "")),
        (cursor_id, str(uuid.UUID(int=1)) + "\x00"),
        (cursor_time, "2026-01-01T00:00:00"),  # no offset
        (cursor_time, "0001-01-01T00:00:00+14:00"),  # before year 1 in UTC
        (cursor_time, "9999-12-31T23:59:59-14:00"),  # after year 9999 in UTC
        (cursor_time, "2026-13-01T00:00:00+00:00"),
        (cursor_time, "infinity"),
        (cursor_int32, str(2**31)),
        (cursor_int32, str(-(2**31) - 1)),
        (cursor_int32, "1" * 5000),
        (cursor_int32, "1.5"),
        (cursor_int32, ""),
    ],
)
def test_out_of_range_cursor_fields_are_invalid_argument_on_page_token(
    read: object, text: str
) -> None:
    with pytest.raises(InvalidArgument) as exc:
        read(text)  # type: ignore[operator]
    assert fields_of(exc.value) == ["page_token"]


def test_a_cursor_with_the_wrong_number_of_fields_is_malformed() -> None:
    with pytest.raises(InvalidArgument):
        cursor_parts("a|b|c", 4)
