"""Fleet statistics for a dashboard (seed ``002_…``): per client, brand or production run,
trackers per status, silent, fetched in the last hour and reports stored in the last hour."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

RECENT = timedelta(hours=1)
"""What "in the last hour" means for fetches and reports."""


class GroupBy(enum.StrEnum):
    CLIENT = "CLIENT"
    BRAND = "BRAND"
    PRODUCTION_RUN = "PRODUCTION_RUN"


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetGroup:
    """One client, brand or run: its trackers and what they do."""

    key: str
    trackers: int
    in_storage: int
    in_transit: int
    delivered: int
    no_status: int
    silent: int
    fetched_last_hour: int
    reports_last_hour: int


def total(groups: list[FleetGroup]) -> FleetGroup:
    """The sum over the groups (key empty)."""
    return FleetGroup(
        key="",
        trackers=sum(g.trackers for g in groups),
        in_storage=sum(g.in_storage for g in groups),
        in_transit=sum(g.in_transit for g in groups),
        delivered=sum(g.delivered for g in groups),
        no_status=sum(g.no_status for g in groups),
        silent=sum(g.silent for g in groups),
        fetched_last_hour=sum(g.fetched_last_hour for g in groups),
        reports_last_hour=sum(g.reports_last_hour for g in groups),
    )
