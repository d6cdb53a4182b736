"""How much one request may ask for: every batch limit of the API, declared once.

Use cases enforce them (INVALID_ARGUMENT naming the field and the limit), the proto comments
and the README quote them, and the gRPC servers refuse a message larger than
``MAX_MESSAGE_BYTES`` (RESOURCE_EXHAUSTED) before decoding it. Each keeps the work of one
request, and of the one transaction behind it, small and predictable.
"""

from __future__ import annotations

from domain.errors import InvalidArgument

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""The largest request message a server accepts (``grpc.max_receive_message_length``);
10,000 reports take about 1 MiB, so this is room, not a target."""

MAX_REPORTS_PER_MESSAGE = 10_000
"""IngestReports: reports in one stream message (one transaction)."""
MAX_REPORT_MONTHS_PER_MESSAGE = 12
"""IngestReports: distinct calendar months (UTC) of the report times of one message. Each
month is one partition of ``reports`` the transaction writes and locks; a year of backfill
fits in one message, a message spread over decades is refused before any work."""

MAX_BATCH_TRACKERS = 1000
"""BatchCreateTrackers: trackers per call (and so production runs per call)."""
MAX_BATCH_STATUSES = 1000
"""BatchGetTrackerStatuses: tracker ids per call."""
MAX_IMPORT = 10_000
"""AllocateTags, ImportTrackers (MAC addresses) and ImportExternalTrackers (private keys)."""
MAX_BATCH_KEYS = 1_000_000
"""CreateKeyBatch: key pairs per batch (generated and stored in chunks of 2,000)."""
MAX_SIGHTINGS_PER_MESSAGE = 10_000
"""IngestSightings: sightings of one detector in one stream message (one transaction)."""
MAX_STREAM_DETECTORS = 16
"""StreamDetectorEvents: detectors one stream follows."""
MAX_EVENT_DETECTORS = 100
"""ListDetectorEvents: detector ids per call."""


def check_count(field: str, count: int, limit: int, *, minimum: int = 1, per: str = "") -> None:
    """``minimum <= count <= limit`` for a repeated field, else a violation naming both."""
    unit = f" per {per}" if per else ""
    if count < minimum:
        raise InvalidArgument(field, f"at least {minimum} required")
    if count > limit:
        raise InvalidArgument(field, f"at most {limit}{unit}, got {count}")


MAX_JOB_FILE_BYTES = 12 * 1024 * 1024
"""StartJob: the CSV file of one bulk job (50,000 MACs take about 1 MiB, keys about 3 MiB)."""
MAX_JOB_ITEMS = 250_000
"""StartJob: rows of one bulk job's file (and trackers of a run one re-evaluation covers)."""
MAX_JOB_BATCH_SIZE = 5000
"""StartJob: items per batch (one transaction each)."""

MAX_WEBHOOK_URL_LENGTH = 2048
"""CreateWebhook: characters of the URL."""
MAX_REDELIVER_EVENTS = 1000
"""RedeliverWebhookEvents: event ids per call."""
MAX_TRACK_POINTS = 100_000
"""trackerctl track-svg: reports of one tracker drawn in one picture (narrow the time range)."""
