"""Bulk jobs (seed ``004_…``): a long operation over many items (a manufacturing file of tag
MACs, private keys, the trackers of a run), split into batches that workers claim with a
lease. A batch's effects and its completion are one transaction, so a crash anywhere repeats
no batch and loses none. Items that fail are kept with the reason; a finished job can be run
again over its retryable failures only. A job is throttled to a number of items per second.
"""

from __future__ import annotations

import base64
import binascii
import csv
import enum
import io
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from domain.errors import FailedPrecondition, InvalidArgument
from domain.limits import MAX_JOB_BATCH_SIZE, MAX_JOB_FILE_BYTES, MAX_JOB_ITEMS
from domain.model import MacAddress

DEFAULT_BATCH_SIZE = 500
"""Items per batch when the caller does not say (one transaction each)."""
DEFAULT_ITEMS_PER_SECOND = 2000.0
"""Throttle when the caller does not say (settings may change it per deployment)."""
MAX_ITEMS_PER_SECOND = 1_000_000.0

VALIDATION_BATCH = 0
"""The batch number failures found while reading the file are filed under."""


class JobKind(enum.StrEnum):
    IMPORT_TRACKERS = "IMPORT_TRACKERS"
    """Trackers into a production run from tags allocated to its client, by MAC."""
    IMPORT_EXTERNAL_TRACKERS = "IMPORT_EXTERNAL_TRACKERS"
    """Trackers into a production run from private keys made elsewhere (sealed on arrival)."""
    ALLOCATE_TAGS = "ALLOCATE_TAGS"
    """Tags, by MAC, to a client (administrators only)."""
    REEVALUATE_RUN = "REEVALUATE_RUN"
    """Every tracker of a run back into the processing queue: status replayed from the start."""

    @property
    def needs_file(self) -> bool:
        return self is not JobKind.REEVALUATE_RUN

    @property
    def column(self) -> str:
        """The CSV column the items are read from (else the first column)."""
        return "private_key" if self is JobKind.IMPORT_EXTERNAL_TRACKERS else "mac_address"


class JobStatus(enum.StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    """Every item was tried; some may have failed (``failed_items``)."""
    CANCELLED = "CANCELLED"

    @property
    def final(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.CANCELLED)


class JobStage(enum.StrEnum):
    """Where a job is in its life: its first pass over the file, or a re-run of failures."""

    PROCESSING = "PROCESSING"
    RETRYING = "RETRYING"
    DONE = "DONE"


class BatchStatus(enum.StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    """Claimed by a worker until its lease runs out."""
    DONE = "DONE"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True, slots=True)
class JobItem:
    """One item of a job: its line in the file (or index), what it shows (a MAC, a public key,
    a tracker id: never a secret) and, for private keys, the key sealed on arrival."""

    line: int
    label: str
    secret_kek_id: str = ""
    secret: bytes = b""


@dataclass(frozen=True, slots=True)
class JobFailure:
    line: int
    label: str
    reason: str
    retryable: bool
    batch: int


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What applying one batch did: failures by line (everything else succeeded)."""

    succeeded: int
    failures: list[JobFailure] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """What a caller asks for, checked: the kind, its target, throttle and batch size."""

    kind: JobKind
    client_id: uuid.UUID
    target_id: uuid.UUID
    """The production run (imports, re-evaluation) or the client (allocation)."""
    items_per_second: float = DEFAULT_ITEMS_PER_SECOND
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        check_throttle(self.items_per_second, self.batch_size)


def check_throttle(items_per_second: float, batch_size: int) -> None:
    if not 0 < items_per_second <= MAX_ITEMS_PER_SECOND or items_per_second != items_per_second:
        raise InvalidArgument("items_per_second", f"must be within (0, {MAX_ITEMS_PER_SECOND:g}]")
    if not 1 <= batch_size <= MAX_JOB_BATCH_SIZE:
        raise InvalidArgument("batch_size", f"must be within 1..{MAX_JOB_BATCH_SIZE}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    id: uuid.UUID
    kind: JobKind
    client_id: uuid.UUID
    target_id: uuid.UUID
    status: JobStatus
    stage: JobStage
    items_per_second: float
    batch_size: int
    total_items: int
    succeeded_items: int = 0
    failed_items: int = 0
    """Failures not yet re-run."""
    cancelled_items: int = 0
    pending_items: int = 0
    batches_total: int = 0
    batches_done: int = 0
    batches_running: int = 0
    retries: int = 0
    create_time: datetime
    update_time: datetime
    creator: str = ""

    @property
    def done_items(self) -> int:
        return self.succeeded_items + self.failed_items + self.cancelled_items

    def check_can(self, action: str) -> None:
        """FailedPrecondition unless ``action`` (pause, resume, cancel, retry) fits the status."""
        allowed = {
            "pause": (JobStatus.RUNNING,),
            "resume": (JobStatus.PAUSED,),
            "cancel": (JobStatus.RUNNING, JobStatus.PAUSED),
            "retry": (JobStatus.SUCCEEDED,),
        }[action]
        if self.status not in allowed:
            want = " or ".join(s.value for s in allowed)
            raise FailedPrecondition(
                f"job {self.id} is {self.status.value}; {action} needs {want}", subject=str(self.id)
            )


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    """A batch a worker holds the lease of, with the job it belongs to and its items."""

    job: Job
    seq: int
    owner: uuid.UUID
    items: list[JobItem]


def batches(items: Sequence[JobItem], size: int, first: int = 1) -> list[tuple[int, list[JobItem]]]:
    """Items cut into numbered batches of at most ``size``, in order."""
    return [
        (first + n, list(items[i : i + size])) for n, i in enumerate(range(0, len(items), size))
    ]


def throttle_pause(items: int, items_per_second: float) -> timedelta:
    """How long after claiming a batch of ``items`` the job's next batch may be claimed."""
    return timedelta(seconds=items / items_per_second)


# -- reading a manufacturing or shipment file ----------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedFile:
    items: list[JobItem]
    rejected: list[JobFailure]


def _rows(text: str) -> Iterable[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text))
    for row in reader:
        yield reader.line_num, row


def read_file(data: bytes, column: str, parse: type[MacAddress] | None = MacAddress) -> ParsedFile:
    """Items of a CSV file, one per row: the ``column`` named in a header row, else the first
    column. Blank rows are skipped; a row whose value does not parse, or repeats an earlier
    row's, is rejected with the reason (not retryable). ``parse`` None keeps values as given."""
    if not data:
        raise InvalidArgument("file", "empty: a CSV file with one item per row is required")
    if len(data) > MAX_JOB_FILE_BYTES:
        raise InvalidArgument("file", f"at most {MAX_JOB_FILE_BYTES} bytes, got {len(data)}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InvalidArgument("file", f"not UTF-8 text (byte {err.start})") from None
    if "\x00" in text:
        raise InvalidArgument("file", "contains NUL bytes: not a CSV file")
    items: list[JobItem] = []
    rejected: list[JobFailure] = []
    seen: dict[str, int] = {}
    index = 0
    try:
        for n, (line, row) in enumerate(_rows(text)):
            cells = [c.strip() for c in row]
            if not any(cells):
                continue
            if n == 0:
                names = [c.lower() for c in cells]
                if column in names or "mac" in names:
                    index = names.index(column) if column in names else names.index("mac")
                    continue
            value = cells[index] if index < len(cells) else ""
            if parse is not None:
                try:
                    value = parse.parse(value).value
                except InvalidArgument as err:
                    rejected.append(
                        JobFailure(line, value[:64], err.violations[0].reason, False, 0)
                    )
                    continue
            elif not value:
                rejected.append(JobFailure(line, "", "empty value", False, 0))
                continue
            if value in seen:
                rejected.append(
                    JobFailure(line, value[:64], f"repeats line {seen[value]}", False, 0)
                )
                continue
            seen[value] = line
            items.append(JobItem(line, value))
            if len(items) + len(rejected) > MAX_JOB_ITEMS:
                raise InvalidArgument("file", f"at most {MAX_JOB_ITEMS} rows")
    except csv.Error as err:
        raise InvalidArgument("file", f"not a CSV file: {err}") from None
    if not items and not rejected:
        raise InvalidArgument("file", "no rows: a CSV file with one item per row is required")
    return ParsedFile(items, rejected)


def private_key_bytes(text: str) -> bytes:
    """A private key as written in a file: 56 hex digits or base64 of 28 bytes."""
    raw: bytes | None = None
    if len(text) == 56:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("private_key", "neither 56 hex digits nor base64") from None
    return raw
