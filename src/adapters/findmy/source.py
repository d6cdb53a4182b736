"""``LocationSource`` on Apple's Find My network, built on the ``findmy`` package.

findmy keeps the account: session JSON (written by its interactive login), Anisette headers,
the search-party token. The fetch POST is issued here, to a configurable URL (Apple's, our
simulator, or a proxy), because findmy's own ``fetch_raw_reports`` hides the HTTP status and
Retry-After behind one exception and sleeps ~30 s on empty answers, which a scheduler must
see and decide on. Payloads are decrypted by findmy's ``LocationReport`` with the tag's
``KeyPair``; nothing of the crypto is reimplemented.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
from findmy import KeyPair
from findmy.reports.account import AsyncAppleAccount
from findmy.reports.reports import LocationReport

from adapters.clock import SystemClock
from adapters.findmy.keypairs import KeyPairCache
from domain.errors import InvalidArgument
from domain.fetching import (
    FetchOutcome,
    SourceProtocolError,
    SourceRateLimited,
    SourceUnauthorized,
    SourceUnavailable,
    TrackerKey,
)
from domain.model import GeoPoint
from domain.ports.common import Clock
from domain.ports.keys import SecretSealer
from domain.reports import Report

log = logging.getLogger(__name__)

APPLE_FETCH_URL = AsyncAppleAccount._ENDPOINT_REPORTS_FETCH

Relogin = Callable[[AsyncAppleAccount], Awaitable[None]]


async def findmy_relogin(account: AsyncAppleAccount) -> None:
    """Sign in again with the stored credentials, as findmy does on a 401."""
    await account._gsa_authenticate()
    await account._login_mobileme()


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as delay-seconds or as an HTTP date (RFC 9110 10.2.3); None if absent
    or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _retry_after(headers: Any, now: datetime) -> float | None:
    return retry_after_s(headers.get("Retry-After"), now)


def _count(entry: Any) -> int:
    """Reports lost with an unreadable entry (at least one)."""
    infos = entry.get("locationInfo") if isinstance(entry, dict) else None
    return max(1, len(infos)) if isinstance(infos, list) else 1


APPLE_EPOCH_S = 60 * 60 * 24 * 11323
"""2001-01-01 in Unix seconds: Find My's times count from there."""


def report_time(payload: bytes) -> datetime:
    """A report's time, in UTC, from the payload's clear head: what findmy's
    ``LocationReport.timestamp`` reads (4 bytes, seconds since 2001), without its detour
    through the local time zone."""
    return datetime.fromtimestamp(int.from_bytes(payload[:4], "big") + APPLE_EPOCH_S, UTC)


def _not_held(
    payloads: list[bytes], hashed: bytes, held: Sequence[datetime]
) -> tuple[list[bytes], int]:
    """The payloads to decrypt, and how many were left out as reports we hold. A report's
    time is readable before decryption (findmy reads it from the payload's clear head); the
    payloads dated at a time we hold reports for are left out when there are no more of them
    than we hold there (two finders may report a tag in the same second: then all of that
    second are decrypted, and storage keeps what is new)."""
    times: list[datetime | None] = []
    for payload in payloads:
        try:
            times.append(report_time(payload) if len(payload) >= 4 else None)
        except (ValueError, OverflowError, OSError):
            times.append(None)
    answered = Counter(t for t in times if t is not None)
    have = Counter(held)
    skip = {t for t, n in answered.items() if n <= have.get(t, 0)}
    if not skip:
        return payloads, 0
    kept = [p for p, t in zip(payloads, times, strict=True) if t not in skip]
    return kept, len(payloads) - len(kept)


class FindMyLocationSource:
    def __init__(
        self,
        account: AsyncAppleAccount,
        sealer: SecretSealer,
        *,
        fetch_url: str = APPLE_FETCH_URL,
        timeout_s: float = 30.0,
        relogin: Relogin = findmy_relogin,
        clock: Clock | None = None,
        key_pairs: KeyPairCache | None = None,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        # None: a pair per fetch (no cache); the fetcher passes one shared by its accounts
        self._key_pairs = key_pairs if key_pairs is not None else KeyPairCache(0)
        self._account, self._sealer = account, sealer
        self._fetch_url, self._timeout_s, self._relogin = fetch_url, timeout_s, relogin
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self._account.close()

    async def _post(self, body: dict[str, Any]) -> tuple[int, Any, bytes]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s))
        state = self._account._login_state_data
        token = f"{state['dsid']}:{state['mobileme_data']['tokens']['searchPartyToken']}"
        try:
            headers = dict(await self._account.get_anisette_headers())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # An outage of the Anisette server, not a defect: the account pauses and probes.
            raise SourceUnavailable(f"anisette unavailable: {type(exc).__name__}") from None
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
        try:
            async with self._http.post(self._fetch_url, json=body, headers=headers) as resp:
                return resp.status, resp.headers, await resp.read()
        except TimeoutError:
            # Apple may still be working on it: its account is not free yet.
            raise SourceUnavailable(
                f"no answer within {self._timeout_s}s", timed_out=True
            ) from None
        except aiohttp.ClientConnectorError as exc:  # never reached Apple
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}") from None
        except aiohttp.ClientError as exc:  # sent, perhaps: as if we stopped waiting
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}", timed_out=True) from None

    async def fetch(
        self, keys: Sequence[TrackerKey], since: datetime, until: datetime
    ) -> FetchOutcome:
        """One request: each key in its own ``fetch`` entry, as Apple expects."""
        if not keys:
            return FetchOutcome([])
        body = {
            "clientContext": {
                "clientBundleIdentifier": "com.apple.icloud.searchpartyuseragent",
                "policy": "foregroundClient",
            },
            "fetch": [
                {
                    "ownedDeviceIds": [],
                    "keyType": 1,
                    "startDate": int((k.since or since).timestamp() * 1000),
                    "startDateSecondary": int((k.since or since).timestamp() * 1000),
                    "endDate": int((k.until or until).timestamp() * 1000),
                    "primaryIds": [base64.b64encode(k.advertisement_key.hashed).decode()],
                    "secondaryIds": [],
                }
                for k in keys
            ],
        }
        status, headers, raw = await self._post(body)
        if status == 401:
            log.info("find my answered 401: signing in again")
            try:
                await self._relogin(self._account)
            except Exception as exc:
                raise SourceUnauthorized(f"sign-in failed: {type(exc).__name__}") from None
            status, headers, raw = await self._post(body)
            if status == 401:
                raise SourceUnauthorized("not authorized to fetch reports")
        if status == 429:
            raise SourceRateLimited("HTTP 429", _retry_after(headers, self._clock.now()))
        if status >= 500:
            raise SourceUnavailable(f"HTTP {status}", _retry_after(headers, self._clock.now()))
        if status != 200:
            raise SourceProtocolError(f"HTTP {status}")
        if not raw.strip():
            raise SourceUnavailable("empty answer")
        return await asyncio.to_thread(self._decrypt_all, keys, raw)

    def _decrypt_all(self, keys: Sequence[TrackerKey], raw: bytes) -> FetchOutcome:
        try:
            answer = json.loads(raw)
            locations = answer["acsnLocations"]
            if locations.get("statusCode") != "200":
                raise SourceProtocolError(f"status {locations.get('statusCode')}")
            entries = locations.get("locationPayload", [])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SourceProtocolError("unreadable answer") from None
        by_hash = {k.advertisement_key.hashed: k for k in keys}
        pairs: dict[bytes, KeyPair] = {}
        reports, malformed, foreign, held = [], 0, 0, 0
        for entry in entries:
            # One bad payload skips that report only; the entry's others are kept.
            try:
                hashed = base64.b64decode(entry["id"], validate=True)
                infos = entry.get("locationInfo", [])
                if not isinstance(infos, list):
                    raise TypeError("locationInfo")
            except (KeyError, TypeError, ValueError, AttributeError):
                malformed += _count(entry)
                continue
            key = by_hash.get(hashed)
            if key is None:
                foreign += len(infos)
                continue
            payloads = []
            for info in infos:
                try:
                    payloads.append(base64.b64decode(info, validate=True))
                except (TypeError, ValueError):
                    malformed += 1
            if key.held:
                payloads, again = _not_held(payloads, hashed, key.held)
                held += again
            if payloads and hashed not in pairs:
                # Only for an answer with payloads to decrypt: the request itself needs
                # the hashed key only, read from PostgreSQL.
                unseal = functools.partial(self._sealer.unseal, key.sealed_private_key, hashed)
                pairs[hashed] = self._key_pairs.get(hashed, unseal)
            for payload in payloads:
                report = self._one(key, pairs[hashed], hashed, payload)
                if report is None:
                    malformed += 1
                else:
                    reports.append(report)
        return FetchOutcome(reports, malformed=malformed, foreign=foreign, held=held)

    @staticmethod
    def _one(key: TrackerKey, pair: KeyPair, hashed: bytes, payload: bytes) -> Report | None:
        if len(payload) not in (88, 89):
            return None
        try:
            found = LocationReport(payload, hashed)
            found.decrypt(pair)
            return Report(
                tracker_id=key.tracker_id,
                report_time=report_time(payload),
                position=GeoPoint(found.latitude, found.longitude),
                confidence=found.confidence,
                horizontal_accuracy_m=found.horizontal_accuracy,
                status=found.status,
                source="findmy",
            )
        except (ValueError, InvalidArgument, OverflowError, ArithmeticError):
            return None
        except Exception as exc:  # cryptography's InvalidTag and friends: a bad payload
            log.debug("undecryptable report", extra={"error": type(exc).__name__})
            return None
