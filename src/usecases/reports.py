"""Storing location reports pushed by other sources (the Find My fetcher stores its own
through the same repository). Valid reports are stored, invalid ones rejected one by one.

The stream's bulk path: a message arrives as columns (``IncomingReports``), its trackers are
resolved in one query (by id and by hashed key at once; known ones are remembered for a
while), every report is judged with plain values (``domain.reports.report_problems``), and
the valid ones go to the repository as columns: no entity per report."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.access import Principal
from domain.errors import FieldViolation, InvalidArgument
from domain.instants import (
    DEFAULT_MAX_CLOCK_SKEW,
    check_clock_skew,
    latest_report_time,
    month_start,
)
from domain.limits import MAX_REPORT_MONTHS_PER_MESSAGE, MAX_REPORTS_PER_MESSAGE, check_count
from domain.ports.common import Clock, UnitOfWorkFactory
from domain.ports.reports import ReportsUnitOfWork
from domain.reports import (
    MAX_TIME_US,
    MIN_TIME_US,
    IngestResult,
    ReportRows,
    TrackerRef,
    from_us,
    report_problems,
    suspects,
    to_us,
)

MAX_REPORTS_PER_CALL = MAX_REPORTS_PER_MESSAGE
MAX_CLOCK_SKEW = DEFAULT_MAX_CLOCK_SKEW
_DAY_US = 86_400_000_000
MAX_VIOLATIONS = 100
_NAIVE_TIME = MAX_TIME_US + 1  # a time without a zone (only possible in-process)


@dataclass(frozen=True, slots=True)
class NewReport:
    """A report as a source sends it: the tracker by id or by hashed advertisement key."""

    report_time: datetime | None
    latitude: float
    longitude: float
    confidence: int
    horizontal_accuracy_m: int
    status: int = 0
    tracker_id: uuid.UUID | None = None
    hashed_advertisement_key: bytes = b""
    published_time: datetime | None = None
    source: str = "push"


@dataclass(slots=True)
class IncomingReports:
    """Reports as a source sends them, in columns (index i = the message's report i).
    ``tracker_ids`` are as sent (text, "" when the tracker is given by hashed key); times
    are microseconds since 1970 UTC (None: not given)."""

    tracker_ids: list[str] = field(default_factory=list)
    hashed_keys: list[bytes] = field(default_factory=list)
    times_us: list[int | None] = field(default_factory=list)
    latitudes: list[float] = field(default_factory=list)
    longitudes: list[float] = field(default_factory=list)
    confidences: list[int] = field(default_factory=list)
    accuracies_m: list[int] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    published_us: list[int | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times_us)

    @classmethod
    def of(cls, items: Sequence[NewReport]) -> IncomingReports:
        def us(t: datetime | None) -> int | None:
            if t is None:
                return None
            return _NAIVE_TIME if t.tzinfo is None or t.utcoffset() is None else to_us(t)

        return cls(
            [str(i.tracker_id) if i.tracker_id is not None else "" for i in items],
            [i.hashed_advertisement_key for i in items],
            [us(i.report_time) for i in items],
            [i.latitude for i in items],
            [i.longitude for i in items],
            [i.confidence for i in items],
            [i.horizontal_accuracy_m for i in items],
            [i.status for i in items],
            [us(i.published_time) for i in items],
            [i.source for i in items],
        )

    def extend(self, other: IncomingReports) -> None:
        """Append another message's reports (several messages, one transaction)."""
        for name in self.__slots__:
            getattr(self, name).extend(getattr(other, name))


def check_message(message: IncomingReports) -> None:
    """A message over the limits of ``domain.limits`` (reports, distinct months) is refused
    whole, before any work."""
    check_count("reports", len(message), MAX_REPORTS_PER_MESSAGE, minimum=0, per="message")
    days = {
        t // _DAY_US for t in message.times_us if t is not None and MIN_TIME_US <= t <= MAX_TIME_US
    }
    months = {month_start(from_us(d * _DAY_US)) for d in days}
    if len(months) > MAX_REPORT_MONTHS_PER_MESSAGE:
        raise InvalidArgument(
            "reports",
            f"report times span {len(months)} months; at most "
            f"{MAX_REPORT_MONTHS_PER_MESSAGE} distinct months (UTC) per message",
        )


class TrackerRefCache:
    """Trackers recently resolved, by id (as sent) and by hashed key, for ``ttl``: a tracker's
    id, client and key never change, so the only staleness is a tracker deleted meanwhile,
    whose reports could still be stored for ``ttl`` (as a write racing the delete could).
    Unknown trackers are not remembered, so a new one is found at once. ``ttl`` 0: none."""

    def __init__(self, clock: Clock, ttl: timedelta, size: int = 500_000) -> None:
        self._clock, self._ttl, self._size = clock, ttl, size
        self._by_id: OrderedDict[str, tuple[TrackerRef, datetime]] = OrderedDict()
        self._by_key: OrderedDict[bytes, tuple[TrackerRef, datetime]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._ttl > timedelta(0)

    def lookup(
        self, ids: set[str], keys: set[bytes]
    ) -> tuple[dict[str, TrackerRef], dict[bytes, TrackerRef]]:
        now = self._clock.now()
        return self._hits(self._by_id, ids, now), self._hits(self._by_key, keys, now)

    @staticmethod
    def _hits(entries: OrderedDict, wanted: set, now: datetime) -> dict:  # type: ignore[type-arg]
        out = {}
        for k in wanted:
            e = entries.get(k)
            if e is not None:
                if e[1] > now:
                    out[k] = e[0]
                else:
                    del entries[k]
        return out

    def put(self, by_id: dict[str, TrackerRef], by_key: dict[bytes, TrackerRef]) -> None:
        if not self.enabled:
            return
        until = self._clock.now() + self._ttl
        for text, ref in by_id.items():
            self._by_id[text] = (ref, until)
        for key, ref in by_key.items():
            self._by_key[key] = (ref, until)
        for entries in (self._by_id, self._by_key):
            while len(entries) > self._size:
                entries.popitem(last=False)


class IngestReports:
    """Each report needs a tracker the caller manages; one that is missing or not the
    caller's is rejected with the same reason, so nobody learns which trackers exist.
    Storing is idempotent, so a transaction that failed for a transient reason (connection
    lost, deadlock) is simply run again (``UnitOfWorkFactory[ReportsUnitOfWork].retrying``)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory[ReportsUnitOfWork],
        clock: Clock,
        cache: TrackerRefCache | None = None,
        max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
    ) -> None:
        check_clock_skew(max_clock_skew)
        self._uow, self._clock, self._skew = uow, clock, max_clock_skew
        self._cache = cache or TrackerRefCache(clock, timedelta(0))

    async def __call__(
        self,
        caller: Principal,
        items: Sequence[NewReport] | IncomingReports,
        offset: int = 0,
    ) -> IngestResult:
        """Store one message (or several, concatenated, whose sizes were checked one by one
        with ``check_message``); ``offset`` is the index of the first report in the stream."""
        if isinstance(items, IncomingReports):
            batch = items
        else:
            batch = IncomingReports.of(items)
            check_message(batch)
        latest_us = to_us(latest_report_time(self._clock.now(), self._skew))

        async def attempt() -> IngestResult:
            async with self._uow() as uow:
                by_id, by_key = await self._resolve(uow, batch)
                rows, rejected, bad = _judge(
                    caller, batch, by_id, by_key, latest_us, offset, self._skew
                )
                stored = await uow.reports.add_rows(rows) if len(rows) else 0
                await uow.commit()
            return IngestResult(
                received=len(batch),
                stored=stored,
                duplicates=len(rows) - stored,
                rejected_count=bad,
                rejected=tuple(rejected),
            )

        if not len(batch):
            return IngestResult(0, 0, 0, 0, ())
        return await self._uow.retrying(attempt)

    async def _resolve(
        self, uow: ReportsUnitOfWork, batch: IncomingReports
    ) -> tuple[dict[str, TrackerRef], dict[bytes, TrackerRef]]:
        """The batch's trackers by id text and by hashed key: from the cache, the rest in one
        query. Ids that are not UUIDs are simply unknown."""
        ids = set(batch.tracker_ids)
        ids.discard("")
        keys = {k for i, k in zip(batch.tracker_ids, batch.hashed_keys, strict=True) if not i}
        keys.discard(b"")
        by_id, by_key = self._cache.lookup(ids, keys)
        want_ids: dict[uuid.UUID, str] = {}
        for text in ids - by_id.keys():
            try:
                want_ids[uuid.UUID(text)] = text
            except ValueError:
                continue
        want_keys = list(keys - by_key.keys())
        if want_ids or want_keys:
            found = await uow.trackers.refs(list(want_ids), want_keys)
            new_ids: dict[str, TrackerRef] = {}
            new_keys: dict[bytes, TrackerRef] = {}
            for ref in found:
                if ref.id in want_ids:
                    new_ids[want_ids[ref.id]] = ref
                if ref.hashed_advertisement_key in keys:
                    new_keys[ref.hashed_advertisement_key] = ref
            self._cache.put(new_ids, new_keys)
            by_id |= new_ids
            by_key |= new_keys
        return by_id, by_key


def _judge(
    caller: Principal,
    b: IncomingReports,
    by_id: dict[str, TrackerRef],
    by_key: dict[bytes, TrackerRef],
    latest_us: int,
    offset: int,
    skew: timedelta,
) -> tuple[ReportRows, list[FieldViolation], int]:
    """The valid reports as rows; the violations (at most MAX_VIOLATIONS) and how many
    reports were rejected. Column-wise: a tracker per report, the caller's access per client,
    then the rules in one pass; only reports that fail get a closer look."""
    refs = [
        by_id.get(text) if text else by_key.get(key)
        for text, key in zip(b.tracker_ids, b.hashed_keys, strict=True)
    ]
    verdicts: dict[uuid.UUID, str | None] = {}
    for client in {ref.client_id for ref in refs if ref is not None}:
        if not caller.can_read(client):
            verdicts[client] = "unknown tracker"
        elif not caller.can_manage(client):
            verdicts[client] = "needs CLIENT_ADMIN of its client"
        else:
            verdicts[client] = None
    faults: dict[int, list[FieldViolation]] = {}
    for n, ref in enumerate(refs):
        verdict = "unknown tracker" if ref is None else verdicts[ref.client_id]
        if verdict is not None:
            faults[n] = [FieldViolation("", verdict)]
    for n in suspects(
        b.times_us,
        latest_us,
        b.latitudes,
        b.longitudes,
        b.confidences,
        b.accuracies_m,
        b.statuses,
        b.published_us,
        b.sources,
    ):
        if n in faults:
            continue  # an unknown tracker hides the report's other faults
        t = b.times_us[n]
        problems = report_problems(
            t,
            latest_us,
            b.latitudes[n],
            b.longitudes[n],
            b.confidences[n],
            b.accuracies_m[n],
            b.statuses[n],
            b.published_us[n],
            b.sources[n],
            skew=skew,
        )
        if t == _NAIVE_TIME:
            problems = [FieldViolation("report_time", "must be timezone-aware")]
        if problems:
            faults[n] = problems
    rejected: list[FieldViolation] = []
    for n in sorted(faults):
        for v in faults[n]:
            if len(rejected) < MAX_VIOLATIONS:
                where = f"reports[{offset + n}]"
                rejected.append(
                    FieldViolation(f"{where}.{v.field}" if v.field else where, v.reason)
                )
    if not faults:
        ids = [ref.id for ref in refs]  # type: ignore[union-attr]
        rows = ReportRows(
            ids,
            b.times_us,  # type: ignore[arg-type]
            b.latitudes,
            b.longitudes,
            b.confidences,
            b.accuracies_m,
            b.statuses,
            b.published_us,
            b.sources,
        )
        return rows, rejected, 0
    keep = [n for n in range(len(b)) if n not in faults]
    rows = ReportRows(
        [refs[n].id for n in keep],  # type: ignore[union-attr]
        [b.times_us[n] for n in keep],  # type: ignore[misc]
        [b.latitudes[n] for n in keep],
        [b.longitudes[n] for n in keep],
        [b.confidences[n] for n in keep],
        [b.accuracies_m[n] for n in keep],
        [b.statuses[n] for n in keep],
        [b.published_us[n] for n in keep],
        [b.sources[n] for n in keep],
    )
    return rows, rejected, len(faults)
