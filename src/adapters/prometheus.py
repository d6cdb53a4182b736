"""Prometheus metrics of a process, and the HTTP endpoint that serves them."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from domain.ports.common import Clock
from domain.processing import ProcessingBacklog
from domain.scheduling import Capacity, QueueStats, SyncResult
from usecases.processing import BatchSummary

# -- every gRPC server: the Prometheus gRPC conventions (go-grpc-prometheus, py-grpc-prometheus)
RPC_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
GRPC_STARTED = Counter("grpc_server_started_total", "RPCs started on the server", RPC_LABELS)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status code",
    [*RPC_LABELS, "grpc_code"],
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status (whole stream for streaming RPCs)",
    RPC_LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


class RpcMetrics:
    """The gRPC server metrics on the process's Prometheus registry."""

    def started(self, kind: str, service: str, method: str) -> None:
        GRPC_STARTED.labels(kind, service, method).inc()

    def handled(self, kind: str, service: str, method: str, code: str, seconds: float) -> None:
        GRPC_HANDLED.labels(kind, service, method, code).inc()
        GRPC_HANDLING.labels(kind, service, method).observe(seconds)


DEPENDENCY_UP = Gauge(
    "tracker_dependency_up", "1 while the dependency answers its health check", ["dependency"]
)
RETENTION_DELETED = Counter(
    "tracker_retention_deleted_total",
    "Rows deleted past their retention by the collector's maintenance, by kind",
    ["kind"],
)

# -- the fetcher -------------------------------------------------------------------------------
FETCH_QUEUE = Gauge(
    "tracker_fetch_queue_trackers",
    "Trackers in the fetch queue, by state (queued, due_now, claimed)",
    ["state"],
)
FETCH_QUEUE_LAG = Gauge(
    "tracker_fetch_queue_lag_seconds", "How overdue the most overdue queued tracker is"
)
FETCH_WORKERS = Gauge("tracker_fetch_workers", "Fetchers with a live heartbeat")
FETCH_CLAIMS = Counter("tracker_fetch_claims_total", "Trackers claimed from the queue")
FETCH_TURNS = Counter("tracker_fetch_turns_total", "Tracker turns finished, by result", ["result"])
FETCH_BACKOFF = Histogram(
    "tracker_fetch_backoff_factor",
    "Backoff factor of trackers when requeued (1: healthy)",
    buckets=(1, 2, 4, 8, 16, 32),
)
FETCH_REQUESTS = Counter(
    "tracker_fetch_requests_total",
    "Requests to the source, by account and outcome",
    ["account", "outcome"],
)
FETCH_REQUEST_SECONDS = Histogram(
    "tracker_fetch_request_seconds",
    "Duration of requests to the source, decryption included",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FETCH_REPORTS = Counter(
    "tracker_fetch_reports_total",
    "Reports fetched, by fate (fetched, stored, malformed)",
    ["fate"],
)
FETCH_CAPACITY = Gauge(
    "tracker_fetch_capacity_requests_per_interval",
    "Find My requests per fetch interval: what the active fleet needs (every tracker at x1, "
    "full requests) and what the accounts' budget allows",
    ["kind"],
)
FETCH_ACCOUNTS_NEEDED = Gauge(
    "tracker_fetch_accounts_needed",
    "Apple accounts the active fleet needs within the per-account request budget",
)
FETCH_ERRORS = Counter("tracker_fetch_errors_total", "Fetcher errors, by kind", ["kind"])
FETCH_SYNCS = Counter(
    "tracker_fetch_queue_syncs_total",
    "Rebuilds of the queue from PostgreSQL, by reason",
    ["reason"],
)
FETCH_SYNC_CHANGES = Counter(
    "tracker_fetch_queue_sync_changes_total", "Trackers added or removed by rebuilds", ["change"]
)


def observe_many(histogram: Histogram, value: float, n: int) -> None:
    """``histogram.observe(value)`` ``n`` times, in one step where prometheus_client's
    histogram has its usual insides (a sum and one counter per bucket), else one by one."""
    if n <= 0:
        return
    try:
        bounds, buckets, total = (
            histogram._upper_bounds,
            histogram._buckets,
            histogram._sum,
        )
    except AttributeError:
        for _ in range(n):
            histogram.observe(value)
        return
    total.inc(value * n)
    for bound, bucket in zip(bounds, buckets, strict=True):
        if value <= bound:
            bucket.inc(n)
            break


class PrometheusFetchMetrics:
    """``FetchMetrics`` on the process's Prometheus registry (lags read on ``clock``)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._turns: dict[str, Any] = {}

    def claimed(self, n: int) -> None:
        FETCH_CLAIMS.inc(n)

    def request(self, account: str, outcome: str, seconds: float) -> None:
        FETCH_REQUESTS.labels(account, outcome).inc()
        FETCH_REQUEST_SECONDS.observe(seconds)

    def finished(self, turns: Mapping[tuple[str, int], int]) -> None:
        # Once per batch: the labelled child is looked up once per result, and the factors
        # (a handful of values) are observed n at a time.
        for (result, factor), n in turns.items():
            counter = self._turns.get(result)
            if counter is None:
                counter = self._turns[result] = FETCH_TURNS.labels(result)
            counter.inc(n)
            observe_many(FETCH_BACKOFF, factor, n)

    def reports(self, fetched: int, stored: int, malformed: int) -> None:
        FETCH_REPORTS.labels("fetched").inc(fetched)
        FETCH_REPORTS.labels("stored").inc(stored)
        FETCH_REPORTS.labels("malformed").inc(malformed)

    def queue(self, stats: QueueStats) -> None:
        FETCH_QUEUE.labels("queued").set(stats.queued)
        FETCH_QUEUE.labels("due_now").set(stats.due_now)
        FETCH_QUEUE.labels("claimed").set(stats.claimed)
        FETCH_WORKERS.set(stats.workers)
        lag = 0.0
        if stats.oldest_due is not None:
            lag = max(0.0, (self._clock.now() - stats.oldest_due).total_seconds())
        FETCH_QUEUE_LAG.set(lag)

    def synced(self, reason: str, result: SyncResult) -> None:
        FETCH_SYNCS.labels(reason).inc()
        FETCH_SYNC_CHANGES.labels("added").inc(result.added)
        FETCH_SYNC_CHANGES.labels("removed").inc(result.removed)

    def capacity(self, capacity: Capacity) -> None:
        FETCH_CAPACITY.labels("needed").set(capacity.needed_per_interval)
        FETCH_CAPACITY.labels("allowed").set(capacity.allowed_per_interval)
        FETCH_ACCOUNTS_NEEDED.set(capacity.accounts_needed)

    def error(self, kind: str) -> None:
        FETCH_ERRORS.labels(kind).inc()


# --- processing (worker; issue 6) ---
WORKER_BATCHES = Counter("tracker_worker_batches_total", "Worker batches processed")
WORKER_TRACKERS = Counter(
    "tracker_worker_trackers_total", "Trackers whose new reports the worker processed"
)
WORKER_GEOCODED = Counter("tracker_worker_reports_geocoded_total", "Reports given a nearest city")
WORKER_BUCKETS = Counter("tracker_worker_rollup_buckets_total", "Hourly roll-up buckets recomputed")
WORKER_CHANGES = Counter("tracker_worker_status_changes_total", "Status changes recorded")
WORKER_ERRORS = Counter("tracker_worker_errors_total", "Worker batches that failed", ["kind"])
WORKER_LAG = Gauge(
    "tracker_worker_lag_seconds",
    "Age of the oldest unprocessed report (since it was stored), read from the processing "
    "queue; quarantined trackers are counted apart",
)
WORKER_BACKLOG = Gauge(
    "tracker_worker_backlog_trackers", "Trackers with unprocessed reports (quarantine apart)"
)
WORKER_QUARANTINED = Gauge(
    "tracker_worker_quarantined_trackers",
    "Trackers whose processing failed on their own, waiting for a retry",
)
WORKER_QUARANTINE_EVENTS = Counter(
    "tracker_worker_quarantine_events_total",
    "Trackers put in quarantine (failed) and released from it (processed fine on a retry)",
    ["event"],
)
WORKER_SPLITS = Counter(
    "tracker_worker_batch_splits_total",
    "Failed batch transactions split in halves to isolate a failing tracker",
)
WORKER_BATCH_SECONDS = Histogram(
    "tracker_worker_batch_duration_seconds",
    "Duration of one worker batch",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class PrometheusWorkerMetrics:
    """``WorkerMetrics`` on the process's Prometheus registry (the lag read on ``clock``)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    def batch(self, summary: BatchSummary, seconds: float) -> None:
        WORKER_BATCHES.inc()
        WORKER_BATCH_SECONDS.observe(seconds)
        WORKER_TRACKERS.inc(summary.trackers)
        WORKER_GEOCODED.inc(summary.geocoded)
        WORKER_BUCKETS.inc(summary.buckets)
        WORKER_CHANGES.inc(summary.changes)
        WORKER_QUARANTINE_EVENTS.labels("quarantined").inc(summary.quarantined)
        WORKER_QUARANTINE_EVENTS.labels("released").inc(summary.released)
        WORKER_SPLITS.inc(summary.splits)

    def backlog(self, backlog: ProcessingBacklog) -> None:
        lag = 0.0
        if backlog.oldest_arrival is not None:
            lag = (self._clock.now() - backlog.oldest_arrival).total_seconds()
        WORKER_LAG.set(max(0.0, lag))
        WORKER_BACKLOG.set(backlog.waiting)
        WORKER_QUARANTINED.set(backlog.quarantined)

    def error(self, kind: str) -> None:
        WORKER_ERRORS.labels(kind).inc()


class MetricsServer:
    """``/metrics`` over HTTP on its own thread; ``port`` 0 disables it."""

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        if self._port:
            self._server, self._thread = start_http_server(self._port, addr=self._host)
            self.port = self._server.server_port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# --- bulk jobs (issue 17) ---
JOB_BATCHES = Counter(
    "tracker_job_batches_total",
    "Bulk-job batches a worker took: applied, or given back (paused, cancelled, lease lost)",
    ["outcome"],
)
JOB_ITEMS = Counter("tracker_job_items_total", "Bulk-job items applied by workers", ["outcome"])
JOB_ERRORS = Counter("tracker_job_errors_total", "Bulk-job batches that failed", ["kind"])

# --- silent trackers (issue 17) ---
SILENCE_TURNS = Counter(
    "tracker_silence_turns_total", "Chunks of trackers whose cadence was learned"
)
SILENCE_ERRORS = Counter("tracker_silence_errors_total", "Cadence turns that failed", ["kind"])
SILENCE_PASS_SECONDS = Gauge(
    "tracker_silence_last_turn_seconds", "Duration of the turn that finished the last pass"
)

# --- outages (issue 17) ---
OUTAGE_EVENTS = Counter(
    "tracker_outage_events_total",
    "Outages detected (a cohort's silent share jumped)",
    ["dimension"],
)
OUTAGE_OPEN = Gauge(
    "tracker_outage_open_silent_trackers",
    "Silent trackers of each open outage, by client, cohort dimension and cohort",
    ["client_id", "dimension", "cohort"],
)
OUTAGE_ERRORS = Counter(
    "tracker_outage_errors_total", "Outage detection turns that failed", ["kind"]
)

# -- changes pushed (issue 17) ------------------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "tracker_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: delivered, failed (to be retried), dead (given up "
    "after the last attempt; the dead-letter list), unopenable (its secret's KEK is gone)",
    ["outcome"],
)
WEBHOOK_ERRORS = Counter(
    "tracker_webhook_errors_total", "Webhook delivery turns that failed", ["kind"]
)
WEBHOOK_TURN_SECONDS = Histogram(
    "tracker_webhook_turn_seconds", "Seconds of one webhook delivery turn (concurrent POSTs)"
)
