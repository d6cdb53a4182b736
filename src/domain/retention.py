"""How long what grows without bound besides reports is kept (reports: monthly partitions,
dropped by an operator). One turn of the maintenance deletes, per kind, the rows older than
its cutoff, in chunks; a kind with no keep is kept forever.

- sightings: raw Bluetooth sightings (travel-time bins, once computed, stay). As for events,
  a ``StreamDetectorEvents`` cursor that had not read the newest deleted sighting is refused
  (``CURSOR_EXPIRED``);
- detector statuses: battery and counters history;
- events: the change outbox (and the webhook deliveries of each event). A stream cursor older
  than the oldest kept event can no longer be resumed without a gap: the stream says so
  (``FailedPrecondition`` kind ``CURSOR_EXPIRED``) instead of silently skipping;
- delivered webhook deliveries: delivered ones only (pending and dead ones live as long as
  their event, so the dead-letter list can be redelivered).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from domain.errors import InvalidArgument


class Prunable(StrEnum):
    SIGHTINGS = "sightings"
    DETECTOR_STATUSES = "detector_statuses"
    EVENTS = "events"
    DELIVERED_WEBHOOK_DELIVERIES = "delivered_webhook_deliveries"


MIN_KEEP = timedelta(hours=1)
MIN_EVENT_KEEP = timedelta(days=1)  # consumers of a stream must be able to resume after a day
DEFAULT_KEEP: Mapping[Prunable, timedelta | None] = {
    Prunable.SIGHTINGS: timedelta(days=90),
    Prunable.DETECTOR_STATUSES: timedelta(days=365),
    Prunable.EVENTS: timedelta(days=30),
    Prunable.DELIVERED_WEBHOOK_DELIVERIES: timedelta(days=7),
}


@dataclass(frozen=True)
class RetentionPolicy:
    """``keep[kind]``: how long rows of that kind are kept (None or absent: forever)."""

    keep: Mapping[Prunable, timedelta | None] = field(default_factory=lambda: dict(DEFAULT_KEEP))

    def __post_init__(self) -> None:
        for kind, keep in self.keep.items():
            if keep is None:
                continue
            floor = MIN_EVENT_KEEP if kind is Prunable.EVENTS else MIN_KEEP
            if keep < floor:
                raise InvalidArgument(f"retention_{kind.value}", f"must be at least {floor}")

    def cutoffs(self, now: datetime) -> dict[Prunable, datetime]:
        """Per kind kept for a limited time: rows older than this go."""
        return {k: now - keep for k, keep in self.keep.items() if keep is not None}
