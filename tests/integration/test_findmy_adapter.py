"""The Find My adapter against our Apple-compatible simulator on loopback: genuinely encrypted
reports decrypted by findmy's own code, and every fault typed for the scheduler."""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from findmy import KeyPair
from findmy.reports.account import AsyncAppleAccount
from findmy.reports.reports import LocationReport

from adapters.findmy.accounts import close_accounts, load_accounts
from adapters.findmy.keypairs import KeyPairCache
from adapters.findmy.source import FindMyLocationSource, report_time, retry_after_s
from adapters.keys import AesGcmSealer
from domain.fetching import (
    SourceProtocolError,
    SourceRateLimited,
    SourceUnauthorized,
    SourceUnavailable,
    TrackerKey,
)
from domain.model import AdvertisementKey
from domain.reports import e7
from servers.config import Settings, kek_ring
from simulator.server import FETCH_PATH, Simulator, start

pytestmark = pytest.mark.integration

SEALER = AesGcmSealer(*kek_ring(Settings().security))
NOW = datetime.now(UTC).replace(microsecond=0)


class Harness:
    def __init__(self, sim: Simulator, source: FindMyLocationSource) -> None:
        self.sim, self.source, self.relogins = sim, source, 0

    def tracker(self) -> tuple[TrackerKey, KeyPair]:
        pair = KeyPair.new()
        adv = AdvertisementKey(pair.adv_key_bytes)
        return TrackerKey(uuid.uuid4(), adv, SEALER.seal(pair.private_key_bytes, adv.hashed)), pair

    async def fetch(self, keys: list[TrackerKey]) -> Any:
        return await self.source.fetch(keys, NOW - timedelta(days=7), NOW)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    sim = Simulator(keep=20)
    runner = await start(sim)
    account = AsyncAppleAccount.from_json(sim.account_json())
    h: Harness

    async def relogin(_: AsyncAppleAccount) -> None:
        h.relogins += 1

    source = FindMyLocationSource(
        account, SEALER, fetch_url=sim.base_url + FETCH_PATH, timeout_s=1.0, relogin=relogin
    )
    h = Harness(sim, source)
    yield h
    await source.close()
    await runner.cleanup()


def plain(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "time": (NOW - timedelta(minutes=37 * n + rng.randrange(30))).isoformat(),
        "latitude": round(rng.uniform(-89, 89), 7),
        "longitude": round(rng.uniform(-179, 179), 7),
        "confidence": rng.choice([1, 2, 3]),
        "accuracy_m": rng.randrange(0, 256),
        "status": rng.randrange(256),
        "long_form": rng.random() < 0.5,
    }


async def test_a_thousand_reports_decrypt_to_exactly_what_was_encrypted(harness: Harness) -> None:
    rng = random.Random(7)
    keys, expected = [], set()
    for _ in range(50):
        key, pair = harness.tracker()
        reports = [plain(rng, n) for n in range(20)]
        harness.sim.add_reports(pair.adv_key_bytes, reports)
        keys.append(key)
        expected |= {
            (
                key.tracker_id,
                datetime.fromisoformat(r["time"]),
                e7(r["latitude"]),
                e7(r["longitude"]),
                r["confidence"],
                r["accuracy_m"],
                r["status"],
            )
            for r in reports
        }
    outcome = await harness.fetch(keys)
    got = {
        (
            r.tracker_id,
            r.report_time,
            e7(r.position.latitude),
            e7(r.position.longitude),
            r.confidence,
            r.horizontal_accuracy_m,
            r.status,
        )
        for r in outcome.reports
    }
    assert len(outcome.reports) == 1000
    assert got == expected
    assert (outcome.malformed, outcome.foreign) == (0, 0)
    assert harness.sim.stats["fetch"] == 1


async def test_a_report_encrypted_to_another_key_is_rejected_and_counted(
    harness: Harness,
) -> None:
    rng = random.Random(1)
    key, pair = harness.tracker()
    _, stranger = harness.tracker()
    harness.sim.add_reports(pair.adv_key_bytes, [plain(rng, 1), plain(rng, 2)])
    bad = plain(rng, 3) | {
        "encrypt_to": __import__("base64").b64encode(stranger.adv_key_bytes).decode()
    }
    harness.sim.add_reports(pair.adv_key_bytes, [bad])
    outcome = await harness.fetch([key])
    assert len(outcome.reports) == 2
    assert outcome.malformed == 1


@pytest.mark.parametrize(
    ("fault", "error", "retry_after"),
    [
        ({"mode": "429", "retry_after": 7}, SourceRateLimited, 7.0),
        ({"mode": "500"}, SourceUnavailable, None),
        ({"mode": "503", "retry_after": 30}, SourceUnavailable, 30.0),
        ({"mode": "empty"}, SourceUnavailable, None),
        ({"mode": "garbage"}, SourceProtocolError, None),
        ({"mode": "slow", "delay_s": 3}, SourceUnavailable, None),
    ],
)
async def test_each_fault_is_one_request_and_a_typed_error(
    harness: Harness, fault: dict[str, Any], error: type[Exception], retry_after: float | None
) -> None:
    key, pair = harness.tracker()
    harness.sim.add_reports(pair.adv_key_bytes, [plain(random.Random(2), 1)])
    harness.sim.faults.append({"count": 1, **fault})
    started = datetime.now(UTC)
    with pytest.raises(error) as raised:
        await harness.fetch([key])
    assert getattr(raised.value, "retry_after_s", None) == retry_after
    assert harness.sim.stats["fetch"] == 1, "no hidden retries"
    assert datetime.now(UTC) - started < timedelta(seconds=2), "no hidden sleeps"
    # The fault is over: the same fetch now works and still stores what it can.
    assert len((await harness.fetch([key])).reports) == 1


async def test_401_signs_in_again_once_then_gives_up(harness: Harness) -> None:
    key, pair = harness.tracker()
    harness.sim.add_reports(pair.adv_key_bytes, [plain(random.Random(3), 1)])
    harness.sim.faults.append({"mode": "401", "count": 1})
    assert len((await harness.fetch([key])).reports) == 1
    assert harness.relogins == 1
    harness.sim.faults.append({"mode": "401", "count": 2})
    with pytest.raises(SourceUnauthorized):
        await harness.fetch([key])
    assert harness.relogins == 2


async def test_the_findmy_library_itself_reads_the_simulator(harness: Harness) -> None:
    """Protocol compatibility: findmy's own fetch and decryption, pointed at the simulator."""
    _, pair = harness.tracker()
    harness.sim.add_reports(pair.adv_key_bytes, [plain(random.Random(4), n) for n in range(5)])
    account = AsyncAppleAccount.from_json(harness.sim.account_json())
    account._ENDPOINT_REPORTS_FETCH = harness.sim.base_url + FETCH_PATH  # type: ignore[misc]
    try:
        raw = await account.fetch_raw_reports([([pair.hashed_adv_key_b64], [])])
    finally:
        await account.close()
    assert len(raw) == 5
    for report in raw:
        report.decrypt(pair)
        assert 1 <= report.confidence <= 3


def at(minutes_ago: float, lat: float = 52.5) -> dict[str, Any]:
    return {
        "time": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "latitude": lat,
        "longitude": 13.4,
        "confidence": 2,
        "accuracy_m": 20,
    }


async def test_one_bad_payload_skips_that_report_only_and_is_counted(harness: Harness) -> None:
    key, pair = harness.tracker()
    good = [at(10, 52.1), at(20, 52.2)]
    harness.sim.add_reports(pair.adv_key_bytes, good)
    payloads = [p for _, p in harness.sim.payloads[pair.hashed_adv_key_b64]]
    entry_payloads = [
        "not base64!",  # base64
        base64.b64encode(payloads[0][:40]).decode(),  # length
        base64.b64encode(payloads[0][:-1] + bytes([payloads[0][-1] ^ 1])).decode(),  # tag
        *(base64.b64encode(p).decode() for p in payloads),
    ]
    harness.sim.payloads[pair.hashed_adv_key_b64] = []
    harness.sim.raw_entries = [{"id": pair.hashed_adv_key_b64, "locationInfo": entry_payloads}]
    outcome = await harness.fetch([key])
    assert sorted(r.position.latitude for r in outcome.reports) == [52.1, 52.2]
    assert outcome.malformed == 3


async def test_the_simulator_filters_by_location_time_and_answers_the_newest_again(
    harness: Harness,
) -> None:
    """As Apple does: a window that includes the newest report answers it again; a report
    uploaded late (dated before the newest one) is answered to a window that reaches back."""
    key, pair = harness.tracker()
    harness.sim.add_reports(pair.adv_key_bytes, [at(60), at(30)])
    since = NOW - timedelta(minutes=30)
    newest = await harness.source.fetch([key], since, NOW)
    again = await harness.source.fetch([key], since, NOW)
    assert [r.report_time for r in newest.reports] == [NOW - timedelta(minutes=30)]
    assert again.reports == newest.reports
    harness.sim.add_reports(pair.adv_key_bytes, [at(45)])  # late: before the newest
    assert len((await harness.source.fetch([key], since, NOW)).reports) == 1
    overlap = await harness.source.fetch([key], since - timedelta(hours=6), NOW)
    assert len(overlap.reports) == 3
    # the run's end bounds the window too
    ended = dataclasses.replace(key, until=NOW - timedelta(minutes=40))
    assert len((await harness.source.fetch([ended], NOW - timedelta(days=1), NOW)).reports) == 2


async def test_reports_we_hold_are_not_decrypted_again_but_counted(harness: Harness) -> None:
    """The overlap asks again for what we hold: those payloads are left out before
    decryption (their time is in the clear); a new one dated in between is decrypted."""
    key, pair = harness.tracker()
    harness.sim.add_reports(pair.adv_key_bytes, [at(60), at(45), at(30)])
    held = (NOW - timedelta(minutes=60), NOW - timedelta(minutes=30))
    outcome = await harness.fetch([dataclasses.replace(key, held=held)])
    assert [r.report_time for r in outcome.reports] == [NOW - timedelta(minutes=45)]
    assert (outcome.held, outcome.malformed) == (2, 0)
    everything = await harness.fetch([key])
    assert (len(everything.reports), everything.held) == (3, 0)


async def test_a_second_report_in_a_held_second_is_decrypted(harness: Harness) -> None:
    """Two finders may report a tag in the same second: more payloads at a held time than
    reports held there are all decrypted (storage keeps the new one)."""
    key, pair = harness.tracker()
    harness.sim.add_reports(pair.adv_key_bytes, [at(30, 52.1), at(30, 52.2)])
    held = (NOW - timedelta(minutes=30),)
    outcome = await harness.fetch([dataclasses.replace(key, held=held)])
    assert sorted(r.position.latitude for r in outcome.reports) == [52.1, 52.2]
    assert outcome.held == 0
    both = await harness.fetch([dataclasses.replace(key, held=held * 2)])
    assert (both.reports, both.held) == ([], 2)


async def test_the_simulator_caps_reports_per_entry_keeping_the_newest(harness: Harness) -> None:
    key, pair = harness.tracker()
    harness.sim.per_entry = 5
    harness.sim.add_reports(pair.adv_key_bytes, [at(m) for m in range(1, 13)])
    got = await harness.fetch([key])
    assert sorted(r.report_time for r in got.reports) == [
        NOW - timedelta(minutes=m) for m in (5, 4, 3, 2, 1)
    ]


@pytest.mark.parametrize("ahead_s", [0, 7, 120])
async def test_retry_after_may_be_an_http_date(harness: Harness, ahead_s: int) -> None:
    key, _ = harness.tracker()
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=ahead_s)
    date = email.utils.format_datetime(when, usegmt=True)
    harness.sim.faults.append({"mode": "429", "count": 1, "retry_after": date})
    with pytest.raises(SourceRateLimited) as raised:
        await harness.fetch([key])
    assert raised.value.retry_after_s is not None
    assert ahead_s - 2 <= raised.value.retry_after_s <= ahead_s


def test_retry_after_in_seconds_dates_and_garbage() -> None:
    now = datetime(2026, 12, 2, 20, 0, tzinfo=UTC)
    assert retry_after_s("120", now) == 120.0
    assert retry_after_s("Wed, 02 Dec 2026 20:01:30 GMT", now) == 90.0
    assert retry_after_s("Wed, 02 Dec 2026 19:00:00 GMT", now) == 0.0  # in the past: now
    assert retry_after_s("soon", now) is None
    assert retry_after_s(None, now) is None


async def test_an_anisette_outage_is_an_unavailable_source_not_a_defect(
    harness: Harness,
) -> None:
    key, _ = harness.tracker()
    harness.sim.anisette_faults = 1
    anisette = harness.source._account._anisette
    anisette._anisette_data = None  # not cached: the next request asks the server
    anisette._http.request = _fail_fast(anisette._http.request)  # no 5 s retry sleeps
    with pytest.raises(SourceUnavailable) as raised:
        await harness.fetch([key])
    assert "anisette" in str(raised.value)
    assert harness.sim.stats["fetch"] == 0


def _fail_fast(request: Any) -> Any:
    async def once(method: str, url: str, **kwargs: Any) -> Any:
        kwargs["auto_retry"] = False
        return await request(method, url, **kwargs)

    return once


async def test_the_apple_id_and_tokens_appear_in_no_log_line_of_findmy(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    sim = Simulator()
    runner = await start(sim)
    try:
        session = sim.account_json()
        (tmp_path / "a.json").write_text(json.dumps(session))
        accounts = load_accounts(
            str(tmp_path), SEALER, fetch_url=sim.base_url + FETCH_PATH, timeout_s=1
        )
        caplog.set_level(logging.DEBUG)
        user, token = session["account"]["username"], sim.token
        account_log = logging.getLogger("findmy.reports.account")
        account_log.info("Attempting authentication for user %s", user)
        account_log.debug("token %s for %s", token, session["account"]["password"])
        await close_accounts(accounts)
    finally:
        await runner.cleanup()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Attempting authentication for user [redacted]" in text
    for secret in (user, token, session["account"]["password"], sim.dsid(0)):
        assert secret not in text


class CountingSealer:
    """The real sealer, counting unseals: one per key pair made."""

    def __init__(self) -> None:
        self.unsealed = 0

    def seal(self, plaintext: bytes, context: bytes) -> Any:
        return SEALER.seal(plaintext, context)

    def unseal(self, sealed: Any, context: bytes) -> bytes:
        self.unsealed += 1
        return SEALER.unseal(sealed, context)


async def test_kept_key_pairs_are_reused_least_recently_used_first_out(
    harness: Harness,
) -> None:
    """With a cache, a tracker's key pair is made (its private key unsealed) at its first
    fetch only, up to the cache's size; the least recently used goes first."""
    sealer = CountingSealer()
    cache = KeyPairCache(2)
    source = FindMyLocationSource(
        AsyncAppleAccount.from_json(harness.sim.account_json()),
        sealer,
        fetch_url=harness.sim.base_url + FETCH_PATH,
        timeout_s=1.0,
        key_pairs=cache,
    )
    try:
        trackers = [harness.tracker() for _ in range(3)]
        for _, pair in trackers:
            harness.sim.add_reports(pair.adv_key_bytes, [at(30)])
        a, b, c = (key for key, _ in trackers)

        async def fetch(*keys: TrackerKey) -> int:
            outcome = await source.fetch(list(keys), NOW - timedelta(days=7), NOW)
            assert len(outcome.reports) == len(keys)  # decrypted, kept pair or not
            return sealer.unsealed

        assert await fetch(a, b) == 2
        assert await fetch(a, b) == 2  # both kept
        assert await fetch(c) == 3  # evicts a (b was used after it)
        assert len(cache) == 2
        assert await fetch(b, c) == 3
        assert await fetch(a) == 4
        assert (cache.hits, cache.misses) == (4, 4)
        assert repr(cache) == "KeyPairCache(2/2)"  # never key material
    finally:
        await source.close()


async def test_no_key_pair_is_made_for_an_answer_without_news(harness: Harness) -> None:
    """The request needs only the hashed key (from PostgreSQL): a tracker whose answer holds
    nothing new, or nothing at all, never has its private key unsealed."""
    sealer = CountingSealer()
    source = FindMyLocationSource(
        AsyncAppleAccount.from_json(harness.sim.account_json()),
        sealer,
        fetch_url=harness.sim.base_url + FETCH_PATH,
        timeout_s=1.0,
        key_pairs=KeyPairCache(10),
    )
    try:
        held_key, held_pair = harness.tracker()
        harness.sim.add_reports(held_pair.adv_key_bytes, [at(30)])
        silent, _ = harness.tracker()
        held = dataclasses.replace(held_key, held=(NOW - timedelta(minutes=30),))
        outcome = await source.fetch([held, silent], NOW - timedelta(days=7), NOW)
        assert (outcome.reports, outcome.held) == ([], 1)
        assert sealer.unsealed == 0
    finally:
        await source.close()


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = KeyPairCache(0)
    pair = KeyPair.new()
    made = [cache.get(b"h", lambda: pair.private_key_bytes) for _ in range(2)]
    assert made[0] is not made[1]
    assert len(cache) == 0
    assert made[0].adv_key_bytes == pair.adv_key_bytes
    with pytest.raises(ValueError, match="max_entries"):
        KeyPairCache(-1)


def test_report_time_reads_what_findmy_reads() -> None:
    for seconds in (0, 1, 789_000_000, 2**32 - 1):
        payload = seconds.to_bytes(4, "big") + bytes(84)
        assert report_time(payload) == LocationReport(payload, b"h" * 32).timestamp
