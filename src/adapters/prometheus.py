"""Prometheus metrics of a process, and the HTTP endpoint that serves them."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_REQUESTS = Counter(
    "tracker_rpc_requests_total",
    "gRPC calls handled, by method and status code",
    ["method", "code"],
)
RPC_LATENCY = Histogram(
    "tracker_rpc_duration_seconds",
    "gRPC call duration, by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
DEPENDENCY_UP = Gauge(
    "tracker_dependency_up", "1 while the dependency answers its health check", ["dependency"]
)

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
    "Age of the oldest tracker with unprocessed reports when a batch claimed it",
)
WORKER_BATCH_SECONDS = Histogram(
    "tracker_worker_batch_duration_seconds",
    "Duration of one worker batch",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


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
