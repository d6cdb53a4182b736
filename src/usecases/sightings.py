"""Sightings in (the seed's StreamEventLog and CreateDetectorStatus): one detector's batch
of sightings, and optionally its status, per message, one transaction each.

Device ids are keyed on arrival (``domain.detectors.DeviceKeyRing``): a raw MAC address
lives only in this function's locals, never in a row, a log line or an error. A MAC that is
one of the detector's client's trackers also becomes a report of that tracker at the
detector's position (source ``detector``, accuracy the detector's range), so warehouse gate
detectors feed the status engine.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from domain.access import Principal
from domain.detectors import (
    Detector,
    DetectorStatusReading,
    DeviceIdKind,
    DeviceKeyRing,
    Radio,
    sighting_problem,
)
from domain.errors import FieldViolation, InvalidArgument
from domain.instants import DEFAULT_MAX_CLOCK_SKEW, REPORT_TIME_FLOOR, latest_report_time
from domain.limits import MAX_SIGHTINGS_PER_MESSAGE, check_count
from domain.model import parse_id
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.detectors import DetectorsUnitOfWork, SightingRows
from domain.reports import ReportRows, to_us
from usecases.detectors import manageable_detector

MAX_VIOLATIONS = 100
DETECTOR_SOURCE = "detector"
DETECTOR_REPORT_CONFIDENCE = 3
_FLOOR_US = to_us(REPORT_TIME_FLOOR)


@dataclass(slots=True)
class IncomingSightings:
    """One message as columns (index i = its sighting i); times in microseconds since
    1970 UTC (None: not given); rssi None: not given; radio as sent (0: Bluetooth)."""

    detector_id: str
    times_us: list[int | None] = field(default_factory=list)
    macs: list[bytes] = field(default_factory=list)
    opaque_ids: list[bytes] = field(default_factory=list)
    rssi: list[int | None] = field(default_factory=list)
    radios: list[int] = field(default_factory=list)
    status: DetectorStatusReading | None = None

    def __len__(self) -> int:
        return len(self.times_us)


@dataclass(frozen=True, slots=True)
class SightingsResult:
    received: int
    stored: int
    duplicates: int
    rejected_count: int
    rejected: tuple[FieldViolation, ...]
    statuses: int
    tracker_reports: int


def check_sightings_message(message: IncomingSightings) -> None:
    check_count("sightings", len(message), MAX_SIGHTINGS_PER_MESSAGE, minimum=0, per="message")


class IngestSightings:
    """Store one message. Idempotent (a sighting is its detector, keyed device and time), so
    a transaction that failed for a transient reason is simply run again."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[DetectorsUnitOfWork],
        clock: Clock,
        keys: DeviceKeyRing,
        max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
    ) -> None:
        self._uow, self._clock, self._keys, self._skew = uow, clock, keys, max_clock_skew

    async def __call__(
        self, caller: Principal, message: IncomingSightings, offset: int = 0
    ) -> SightingsResult:
        check_sightings_message(message)
        if not len(message) and message.status is None:
            return SightingsResult(0, 0, 0, 0, (), 0, 0)  # nothing to store (a keep-alive)
        detector_id = parse_id(message.detector_id, "detector_id")
        latest_us = to_us(latest_report_time(self._clock.now(), self._skew))
        status = message.status
        rows = SightingRows(detector_id=detector_id, key_id=self._keys.active)
        rejected: list[FieldViolation] = []
        bad = 0
        heard: dict[bytes, list[int]] = {}  # raw MAC -> times (µs) of its Bluetooth sightings
        key = self._keys.key
        seen: dict[bytes, bytes] = {}
        for n in range(len(message)):
            t, mac, opaque = message.times_us[n], message.macs[n], message.opaque_ids[n]
            rssi, radio = message.rssi[n], message.radios[n]
            problem = sighting_problem(t, mac, opaque, rssi, radio, _FLOOR_US, latest_us)
            if problem is not None:
                bad += 1
                if len(rejected) < MAX_VIOLATIONS:
                    rejected.append(
                        FieldViolation(f"sightings[{offset + n}].{problem[0]}", problem[1])
                    )
                continue
            radio = radio or Radio.BLUETOOTH
            if mac:
                keyed = seen.get(mac)  # a device is heard several times per pass
                if keyed is None:
                    keyed = seen[mac] = key(DeviceIdKind.MAC, mac)
                rows.device_keys.append(keyed)
                if radio == Radio.BLUETOOTH and mac[0] & 0xC0 == 0xC0:
                    # Only a static random address can be a Find My tag's (the top two bits
                    # are set: ``MacAddress.for_advertisement_key``): others are not looked up.
                    heard.setdefault(mac, []).append(t)  # type: ignore[arg-type]
            else:
                rows.device_keys.append(key(DeviceIdKind.OPAQUE, opaque))
            rows.times_us.append(t)  # type: ignore[arg-type]
            rows.rssi.append(rssi)
            rows.radios.append(radio)

        async def attempt() -> SightingsResult:
            async with self._uow() as uow:
                # Access first: another client's detector is NOT_FOUND whatever the message.
                detector = await manageable_detector(caller, uow.detectors, detector_id)
                if status is not None and not _FLOOR_US <= to_us(status.report_time) <= latest_us:
                    raise InvalidArgument("status.report_time", "outside [2019-01-01, now + skew]")
                stored = await uow.sightings.add_rows(rows) if len(rows) else 0
                statuses = 0
                if status is not None:
                    reading = DetectorStatusReading(
                        detector_id,
                        status.report_time,
                        status.battery_voltage,
                        status.bluetooth_count,
                        status.wifi_count,
                    )
                    statuses = int(await uow.sightings.add_status(reading))
                reports = 0
                if heard:
                    texts = {_mac_text(m): m for m in heard}
                    trackers = await uow.detectors.trackers_heard(detector.client_id, list(texts))
                    if trackers:
                        report_rows = _tracker_reports(detector, trackers, texts, heard)
                        reports = await uow.reports.add_rows(report_rows)
                await uow.commit()
            return SightingsResult(
                received=len(message),
                stored=stored,
                duplicates=len(rows) - stored,
                rejected_count=bad,
                rejected=tuple(rejected),
                statuses=statuses,
                tracker_reports=reports,
            )

        return await self._uow.retrying(attempt)


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02X}" for b in raw)


def _tracker_reports(
    detector: Detector,
    trackers: dict[str, uuid.UUID],
    texts: dict[str, bytes],
    heard: dict[bytes, list[int]],
) -> ReportRows:
    rows = ReportRows.empty()
    accuracy = detector.report_accuracy_m
    for text, tracker_id in trackers.items():
        for t in heard[texts[text]]:
            rows.tracker_ids.append(tracker_id)
            rows.times_us.append(t)
            rows.latitudes.append(detector.position.latitude)
            rows.longitudes.append(detector.position.longitude)
            rows.confidences.append(DETECTOR_REPORT_CONFIDENCE)
            rows.accuracies_m.append(accuracy)
            rows.statuses.append(0)
            rows.published_us.append(None)
            rows.sources.append(DETECTOR_SOURCE)
    return rows
