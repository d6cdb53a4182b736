"""Page sizes and opaque page tokens (AIP-158)."""

from __future__ import annotations

import base64
import json
import uuid

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
    decode_token,
    encode_token,
)

FILTER = "brands?client_id=1"


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def fingerprint_of(filter_key: str) -> str:
    """The fingerprint a real token carries, read back from one (the format is private)."""
    data = json.loads(base64.urlsafe_b64decode(encode_token("x", filter_key) + "=="))
    fingerprint: str = data["f"]
    return fingerprint


def only_page_token_errors(token: str, filter_key: str = FILTER) -> None:
    """from_wire either accepts the token or raises InvalidArgument on page_token, nothing else."""
    fields: list[str] = []
    try:
        PageRequest.from_wire(10, token, filter_key)
    except InvalidArgument as err:
        fields = [v.field for v in err.violations]
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
    request = PageRequest.from_wire(page_size, "", FILTER)
    assert request == PageRequest(size=size, after=None)


def test_defaults_are_as_documented() -> None:
    assert (DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE) == (50, 1000)


@pytest.mark.parametrize("page_size", [-1, -50, -(2**31)])
def test_negative_page_size_is_invalid_argument(page_size: int) -> None:
    with pytest.raises(InvalidArgument) as exc:
        PageRequest.from_wire(page_size, "", FILTER)
    assert [v.field for v in exc.value.violations] == ["page_size"]


def test_token_round_trips_the_cursor() -> None:
    after = str(uuid.uuid4())
    token = Page(items=[1, 2], next_after=after).next_token(FILTER)
    assert token
    assert PageRequest.from_wire(2, token, FILTER) == PageRequest(size=2, after=after)


# 20 characters always fit: even escaped as JSON surrogate pairs (12 bytes each) the token
# stays under MAX_TOKEN_LENGTH. Real cursors are ids (36 ASCII characters).
@given(st.text(min_size=1, max_size=20), st.text())
def test_any_short_cursor_round_trips_through_a_token(after: str, filter_key: str) -> None:
    token = encode_token(after, filter_key)
    assert len(token) <= MAX_TOKEN_LENGTH
    assert decode_token(token, filter_key) == after


@given(st.text(min_size=1, max_size=400), st.text(max_size=10))
def test_a_cursor_too_long_for_a_token_is_refused_as_malformed(after: str, filter_key: str) -> None:
    token = encode_token(after, filter_key)
    if len(token) <= MAX_TOKEN_LENGTH:
        assert decode_token(token, filter_key) == after
    else:
        with pytest.raises(InvalidArgument) as exc:
            decode_token(token, filter_key)
        assert exc.value.violations[0].field == "page_token"


def test_token_is_url_safe_and_unpadded() -> None:
    token = encode_token(str(uuid.uuid4()), FILTER)
    assert "=" not in token
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_last_page_has_an_empty_next_token() -> None:
    assert Page(items=[1], next_after=None).next_token(FILTER) == ""


def test_empty_token_starts_from_the_beginning() -> None:
    assert PageRequest.from_wire(5, "", FILTER).after is None


def test_token_from_a_listing_with_other_filters_is_rejected() -> None:
    token = encode_token(str(uuid.uuid4()), "brands?client_id=2")
    with pytest.raises(InvalidArgument) as exc:
        PageRequest.from_wire(10, token, FILTER)
    assert [v.field for v in exc.value.violations] == ["page_token"]
    assert "does not belong" in exc.value.violations[0].reason


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "a",
        "abc$",
        "é",
        b64(b"not json"),
        b64(b"\xff\xfe\x00"),
        b64(b"[]"),
        b64(b'["a", "f"]'),
        b64(b"null"),
        b64(b"42"),
        b64(b'"a string"'),
        b64(b"{}"),
        b64(b'{"a": "x"}'),
        b64(b'{"f": "x"}'),
        b64(b'{"a": "x", "f": "wrong"}'),
        b64(json.dumps({"a": 7, "f": fingerprint_of(FILTER)}).encode()),
        b64(json.dumps({"a": None, "f": fingerprint_of(FILTER)}).encode()),
        b64(json.dumps({"a": ["x"], "f": fingerprint_of(FILTER)}).encode()),
        b64(json.dumps({"a": "x", "f": [fingerprint_of(FILTER)]}).encode()),
        b64(b'{"a": 1' + b"0" * 5000 + b', "f": "x"}'),
        encode_token("x", FILTER)[:-3],
        encode_token("x", FILTER) + "!",
    ],
)
def test_garbage_token_is_invalid_argument_on_page_token(token: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        PageRequest.from_wire(10, token, FILTER)
    assert [v.field for v in exc.value.violations] == ["page_token"]


def test_deeply_nested_token_is_invalid_argument_not_a_crash() -> None:
    with pytest.raises(InvalidArgument):
        PageRequest.from_wire(10, b64(b"[" * 100_000), FILTER)


@given(st.text())
def test_any_text_token_gives_only_invalid_argument(token: str) -> None:
    only_page_token_errors(token)


@given(st.binary())
def test_any_bytes_encoded_as_a_token_give_only_invalid_argument(raw: bytes) -> None:
    only_page_token_errors(b64(raw))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["a", "f", "x"]) | st.text(max_size=3), children, max_size=3
        )
    ),
    max_leaves=10,
)


@given(JSON)
def test_any_json_value_encoded_as_a_token_gives_only_invalid_argument(value: object) -> None:
    only_page_token_errors(b64(json.dumps(value).encode()))
