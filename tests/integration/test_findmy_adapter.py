"""The Find My adapter against our Apple-compatible simulator on loopback: genuinely encrypted
reports decrypted by findmy's own code, and every fault typed for the scheduler."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from findmy import KeyPair
from findmy.reports.account import AsyncAppleAccount

from adapters.findmy.source import FindMyLocationSource
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

SEALER = AesGcmSealer(*kek_ring(Settings()))
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
