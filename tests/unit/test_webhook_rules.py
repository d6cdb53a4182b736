"""The rules of changes pushed: the signature a receiver checks (the documented format, a
known vector), the backoff between attempts (exponential, bounded, jittered), the dead-letter
limit, the URLs a webhook may have, and the stream cursor's syntax."""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.postgres.detectors import FeedPosition, decode_position, encode_position
from adapters.postgres.events import decode_cursor, encode_cursor
from domain.errors import InvalidArgument
from domain.events import DeliveryPolicy, check_secret, check_url, signature, verify_signature


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"id":1}'
    header = signature(b"s3cret-0123456789", 1767225600, body)
    expected = hmac.new(b"s3cret-0123456789", b'1767225600.{"id":1}', hashlib.sha256).hexdigest()
    assert header == f"t=1767225600,v1={expected}"
    assert verify_signature(b"s3cret-0123456789", header, body, now=1767225600 + 60)
    assert not verify_signature(b"s3cret-0123456789", header, body + b" ", now=1767225600)
    assert not verify_signature(b"another-secret-00", header, body, now=1767225600)
    # replayed later than the tolerance: refused
    assert not verify_signature(b"s3cret-0123456789", header, body, now=1767225600 + 301)
    assert not verify_signature(b"s3cret-0123456789", "v1=abc", body, now=1767225600)


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_backoff_doubles_within_jitter_and_is_bounded(attempts: int, seed: int) -> None:
    policy = DeliveryPolicy(
        max_attempts=10, base=timedelta(seconds=5), max_backoff=timedelta(hours=1)
    )
    pause = policy.backoff(attempts, random.Random(seed))
    nominal = min(timedelta(seconds=5) * 2 ** min(attempts - 1, 30), timedelta(hours=1))
    assert nominal * 0.5 <= pause <= nominal * 1.5


def test_a_delivery_is_dead_after_the_last_attempt() -> None:
    policy = DeliveryPolicy(max_attempts=3)
    assert [policy.dead_after(n) for n in (1, 2, 3, 4)] == [False, False, True, True]
    with pytest.raises(InvalidArgument):
        DeliveryPolicy(max_attempts=0)


@pytest.mark.parametrize(
    "url",
    ["https://example.com/hook", "http://127.0.0.1:8080/x?y=1", "https://[::1]/h", "HTTP://a.b"],
)
def test_http_urls_are_webhook_urls(url: str) -> None:
    assert check_url(url.replace("HTTP", "http")) == url.replace("HTTP", "http")


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://x",
        "mailto:a@b.c",
        "http://",
        "https:///path",
        "http://u:p@example.com/",
        "http://exa mple.com/",
        "http://example.com/\x00",
        "http://example.com:0/",
        "http://example.com:99999/",
        "https://example.com/" + "a" * 2100,
    ],
)
def test_other_urls_are_invalid_arguments(url: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        check_url(url)
    assert err.value.violations[0].field == "webhook.url"


def test_secrets_are_bounded() -> None:
    assert check_secret("x" * 16) == b"x" * 16
    for bad in ("short", "x" * 257, "x" * 15 + "\x00"):
        with pytest.raises(InvalidArgument):
            check_secret(bad)


def test_cursors_round_trip_and_anything_else_is_refused() -> None:
    settled = "100:105:100,102"
    assert decode_cursor(encode_cursor(settled)) == (settled, "", 0)
    assert decode_cursor(encode_cursor(settled, "100:110:", 42)) == (settled, "100:110:", 42)
    bad = [
        "",
        "!!",
        encode_cursor("105:100:"),  # xmin above xmax
        encode_cursor("100:105:99"),  # an in-progress xid below xmin
        encode_cursor("100:105:102,101"),  # in-progress xids out of order (PostgreSQL refuses)
        encode_cursor("100:105:", "", 3),  # an id without its upper snapshot
        encode_cursor("0:0:"),
        encode_cursor("1:99999999999999999999:"),
        "x" * 9000,
    ]
    for cursor in bad:
        with pytest.raises(InvalidArgument) as err:
            decode_cursor(cursor)
        assert err.value.violations[0].field == "after_cursor"


def test_detector_stream_positions_round_trip_and_anything_else_is_refused() -> None:
    settled = FeedPosition("100:105:100,102")
    inside = FeedPosition("100:105:100,102", "100:110:", (103, uuid.UUID(int=7), -5, b"k" * 16))
    for position in (settled, inside):
        assert decode_position(encode_position(position)) == position
    raw = encode_position(inside)
    for bad in (
        "",
        "!!",
        "matrix",
        encode_cursor(settled.settled),  # an event stream's cursor
        encode_position(FeedPosition("100:105:102,101")),  # xip out of order
        encode_position(FeedPosition("105:100:")),
        raw[:-4],  # cut short
        "x" * 9000,
    ):
        with pytest.raises(InvalidArgument) as err:
            decode_position(bad)
        assert err.value.violations[0].field == "after_cursor"
