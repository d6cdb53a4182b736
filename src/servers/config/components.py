"""The settings of each component, one model each. A process loads only the components it
runs (``PROCESS_PARTS`` in ``servers/config/settings.py``), so a bad fetcher setting never
stops the query server.

To add a setting: a field in the component that uses it, ``option(default, help,
alias="flat_name")`` (its ``--flat-name`` flag, YAML key and ``TRACKER_FLAT_NAME`` follow
from the alias) with its bounds; durations are ``Seconds``/``Hours``/``Days`` (a bare number
counts in that unit), secrets ``SecretStr`` (a sibling ``<name>_file`` field reads it from a
file). A new component: a class here, a field of ``Settings`` and its processes in
``PROCESS_PARTS``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import SecretStr, model_validator

from domain.errors import InvalidArgument
from domain.events import DeliveryPolicy
from domain.instants import DEFAULT_MAX_CLOCK_SKEW
from domain.jobs import DEFAULT_BATCH_SIZE, DEFAULT_ITEMS_PER_SECOND, MAX_ITEMS_PER_SECOND
from domain.limits import MAX_JOB_BATCH_SIZE, MAX_MESSAGE_BYTES
from domain.outages import (
    DEFAULT_BASELINE_WINDOW,
    DEFAULT_JUMP,
    DEFAULT_MIN_SILENT,
    OutageRule,
)
from domain.retention import Prunable, RetentionPolicy
from domain.silence import DEFAULT_CADENCE, DEFAULT_FACTOR, MAX_CADENCE, MIN_CADENCE, SilenceRule
from domain.throttling import AttemptLimit, LoginLimits
from servers.config.base import (
    NOT_NEGATIVE,
    POSITIVE,
    Component,
    Days,
    FieldError,
    HeaderName,
    Hours,
    KeyPrefix,
    Networks,
    Port,
    PowerOfTwo,
    Seconds,
    one_of,
    option,
)
from usecases.jobs import JobDefaults


class LoggingSettings(Component):
    """Logs (every process)"""

    part = "logging"
    level: Annotated[str, one_of("debug", "info", "warning", "error")] = option(
        "INFO", "DEBUG, INFO, WARNING or ERROR", alias="log_level"
    )
    format: Annotated[str, one_of("json", "text")] = option(
        "json", "json (one object per line) or text", alias="log_format"
    )


class TelemetrySettings(Component):
    """Tracing and the access log (every process; docs/observability.md)"""

    part = "telemetry"
    otlp_endpoint: str = option(
        "",
        "OTLP/gRPC endpoint traces are exported to (e.g. http://otel-collector:4317); "
        "empty: no tracing at all",
        alias="otel_exporter_otlp_endpoint",
        env="OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    service_name: str = option(
        "",
        "service.name of the traces (empty: tracker-<process>)",
        alias="otel_service_name",
        env="OTEL_SERVICE_NAME",
    )
    sampler_arg: float = option(
        1.0,
        "fraction of new traces recorded (a caller's sampled flag wins), 0..1",
        alias="otel_traces_sampler_arg",
        env="OTEL_TRACES_SAMPLER_ARG",
        ge=0,
        le=1,
    )
    access_log_sample: float = option(
        0.0,
        "fraction of successful RPCs logged at INFO (all of them at DEBUG; failed ones "
        "always), 0..1",
        alias="access_log_sample",
        ge=0,
        le=1,
    )


class ServerSettings(Component):
    """Listening, metrics and shutdown (every process)"""

    part = "server"
    bind_host: str = option(
        "127.0.0.1", "address the gRPC servers listen on (0.0.0.0: all)", alias="bind_host"
    )
    health_port: Port = option(
        5000, "grpc.health.v1 port for probes (0: none)", alias="health_port"
    )
    metrics_port: Port = option(
        9464, "Prometheus /metrics HTTP port (0: none)", alias="metrics_port"
    )
    shutdown_grace: Seconds = option(
        10.0, "seconds in-flight RPCs get on shutdown", alias="shutdown_grace_s", **NOT_NEGATIVE
    )
    max_message_bytes: int = option(
        MAX_MESSAGE_BYTES,
        "largest gRPC request message a server accepts (larger: RESOURCE_EXHAUSTED)",
        alias="max_message_bytes",
        ge=64 * 1024,
        le=64 * 1024 * 1024,
    )
    # --- rollouts (issue 15): drain on SIGTERM, connection age ---
    shutdown_drain: Seconds = option(
        5.0,
        "seconds a stopping process behind a Service keeps serving while its health says "
        "NOT_SERVING, before it refuses new calls: load balancers and Kubernetes endpoints "
        "move callers away first (a second SIGTERM/SIGINT cuts it short)",
        alias="shutdown_drain_s",
        **NOT_NEGATIVE,
    )
    max_connection_age: Seconds = option(
        300.0,
        "a client's connection is closed (GOAWAY) after this many seconds, so long-lived "
        "HTTP/2 connections spread over new replicas (0: never)",
        alias="grpc_max_connection_age_s",
        **NOT_NEGATIVE,
    )
    max_connection_age_grace: Seconds = option(
        30.0,
        "seconds calls on a connection closed for its age may still run",
        alias="grpc_max_connection_age_grace_s",
        **NOT_NEGATIVE,
    )


class HealthSettings(Component):
    """Dependency checks behind grpc.health.v1 (every process)"""

    part = "health"
    check_interval: Seconds = option(
        2.0, "seconds between dependency checks", alias="health_check_interval_s", **POSITIVE
    )
    check_timeout: Seconds = option(
        1.0, "seconds a dependency check may take", alias="health_check_timeout_s", **POSITIVE
    )
    max_age: Seconds = option(
        10.0,
        "seconds a health answer trusts the last completed check (older: NOT_SERVING)",
        alias="health_max_age_s",
        **POSITIVE,
    )
    own_process: bool = option(
        False,
        "serve the health port from a child process of its own (answers never wait for "
        "this process's GIL; the chart turns it on)",
        alias="health_process",
    )


class DatabaseSettings(Component):
    """PostgreSQL"""

    part = "database"
    url: SecretStr = option(
        "postgresql://postgres@127.0.0.1:5432/tracker", "PostgreSQL URL", alias="database_url"
    )
    url_file: str = option(
        "", "file holding the PostgreSQL URL (a mounted Secret); wins", alias="database_url_file"
    )
    pool_max: int = option(10, "PostgreSQL connections per process", alias="db_pool_max", ge=1)
    host: str = option("", "overrides the host of database_url", alias="db_host", env="DB_HOST")
    port: Port = option(
        0, "overrides the port of database_url (0: keep)", alias="db_port", env="DB_PORT"
    )
    name: str = option("", "overrides the database of database_url", alias="db_name", env="DB_NAME")
    user: str = option("", "overrides the user of database_url", alias="db_user", env="DB_USER")
    password: SecretStr = option(
        "", "overrides the password of database_url", alias="db_password", env="DB_PASSWORD"
    )
    password_file: str = option(
        "",
        "file holding the database password (a mounted Secret); wins",
        alias="db_password_file",
        env="DB_PASSWORD_FILE",
    )
    # issue 15: the query server's reads go to a replica (docs/deploy.md: replica lag)
    read_url: SecretStr = option(
        "",
        "PostgreSQL read replica the query server reads from (empty: database_url); "
        "DB_HOST & co. do not apply to it",
        alias="database_read_url",
    )
    read_url_file: str = option(
        "",
        "file holding the read replica's URL (a mounted Secret); wins",
        alias="database_read_url_file",
    )
    read_max_lag: Seconds = option(
        30.0,
        "replay lag past which the replica counts as down (its health check fails)",
        alias="database_read_max_lag_s",
        **POSITIVE,
    )
    read_fallback: Annotated[str, one_of("primary", "not_serving")] = option(
        "primary",
        "with the replica down or lagging: primary (reads go to the primary until it is "
        "back) or not_serving (the query server's readiness fails)",
        alias="database_read_fallback",
    )

    @property
    def dsn(self) -> str:
        """``database_url`` with the parts the seed's DB_HOST/DB_PORT/DB_NAME/DB_USER/
        DB_PASSWORD set replaced (they win over the URL's; the rest of the URL stays)."""
        url = self.url.get_secret_value()
        password = self.password.get_secret_value()
        if not (self.host or self.port or self.name or self.user or password):
            return url
        parts = urlsplit(url)
        user = self.user or (parts.username or "")
        password = password or (parts.password or "")
        host = self.host or (parts.hostname or "")
        port = self.port or parts.port
        creds = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        hostport = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
        netloc = f"{creds}@{hostport}" if creds else hostport
        path = "/" + self.name if self.name else parts.path
        return urlunsplit(parts._replace(netloc=netloc, path=path))


class RedisSettings(Component):
    """Redis"""

    part = "redis"
    url: SecretStr = option("redis://127.0.0.1:6379/0", "Redis URL", alias="redis_url")
    url_file: str = option(
        "", "file holding the Redis URL (a mounted Secret); wins", alias="redis_url_file"
    )


class SecuritySettings(Component):
    """Secrets, tokens and password hashing"""

    part = "security"
    environment: Annotated[str, one_of("development", "production")] = option(
        "development",
        "development or production (production refuses insecure defaults)",
        alias="environment",
    )
    jwt_signing_key: SecretStr = option(
        "",
        "secret (>= 32 bytes) that signs access tokens; shared by every process",
        alias="jwt_signing_key",
    )
    jwt_signing_key_file: str = option(
        "",
        "file holding the signing key (e.g. a mounted Secret); wins over jwt_signing_key",
        alias="jwt_signing_key_file",
    )
    kek_ring: SecretStr = option(
        "",
        "key-encryption keys sealing private keys: 'id=base64(32 bytes),id2=...'",
        alias="kek_ring",
    )
    kek_ring_file: str = option(
        "", "file holding the KEK ring (a mounted Secret); wins", alias="kek_ring_file"
    )
    kek_active_id: str = option(
        "", "KEK id that seals new keys (default: the ring's first)", alias="kek_active_id"
    )
    page_token_keys: SecretStr = option(
        "",
        "keys signing page tokens (HMAC-SHA256): 'id=base64(>= 32 bytes),older=...'; the first "
        "signs, all verify (rotation); the same for every query replica. Default: derived from "
        "the JWT signing key",
        alias="page_token_keys",
    )
    page_token_keys_file: str = option(
        "",
        "file holding the page token keys (a mounted Secret); wins",
        alias="page_token_keys_file",
    )
    access_token_ttl: Seconds = option(
        900.0,
        "lifetime of access tokens from Login, seconds",
        alias="access_token_ttl_s",
        **POSITIVE,
    )
    refresh_token_ttl: Seconds = option(
        30 * 86400.0, "lifetime of refresh tokens, seconds", alias="refresh_token_ttl_s", **POSITIVE
    )
    auth_cache_ttl: Seconds = option(
        2.0,
        "seconds a token's user is remembered without asking PostgreSQL (a user deleted or "
        "changed through another process keeps its access that long; 0: ask on every call)",
        alias="auth_cache_ttl_s",
        **NOT_NEGATIVE,
    )
    password_hash_concurrency: int = option(
        2,
        "password hashes (64 MiB each) computed at once per process",
        alias="password_hash_concurrency",
        ge=1,
        le=64,
    )
    password_hash_queue: int = option(
        32,
        "password checks that may wait for a slot; more are refused (RESOURCE_EXHAUSTED)",
        alias="password_hash_queue",
        ge=0,
        le=10_000,
    )


class LoginSettings(Component):
    """Sign-in abuse limits"""

    part = "login"
    max_failures_per_account: int = option(
        10,
        "failed sign-ins per account (e-mail, known or not) in a window before a lockout",
        alias="login_max_failures_per_account",
        ge=1,
    )
    max_failures_per_address: int = option(
        100,
        "failed sign-ins (and token refreshes) per source address in a window",
        alias="login_max_failures_per_address",
        ge=1,
    )
    window: Seconds = option(
        900.0,
        "seconds of the window failed sign-ins are counted in",
        alias="login_window_s",
        **POSITIVE,
    )
    lockout: Seconds = option(
        60.0,
        "seconds of the first lockout; each further one within 24 h doubles it",
        alias="login_lockout_s",
        **POSITIVE,
    )
    lockout_max: Seconds = option(
        900.0, "longest lockout, seconds", alias="login_lockout_max_s", **POSITIVE
    )
    address_header: HeaderName = option(
        "",
        "metadata header a trusted proxy puts the client's address in (e.g. x-forwarded-for; "
        "its last entry counts); empty: the TCP peer's address",
        alias="login_address_header",
    )
    trusted_proxies: Networks = option(
        "",
        "comma-separated networks of proxies whose address header is believed "
        "(empty: believed from any peer, when the header is set)",
        alias="login_trusted_proxies",
    )
    throttle_prefix: KeyPrefix = option(
        "login", "prefix of the sign-in throttle's Redis keys", alias="login_throttle_prefix"
    )

    @model_validator(mode="after")
    def _lockouts(self) -> LoginSettings:
        if self.lockout_max < self.lockout:
            raise FieldError("login_lockout_max_s", "must be >= login_lockout_s")
        return self

    def limits(self) -> LoginLimits:
        """The sign-in limits of ``domain.throttling``."""

        def limit(max_attempts: int) -> AttemptLimit:
            return AttemptLimit(
                max_attempts=max_attempts,
                window=self.window,
                first_lockout=self.lockout,
                max_lockout=self.lockout_max,
            )

        return LoginLimits(
            per_account=limit(self.max_failures_per_account),
            per_address=limit(self.max_failures_per_address),
        )


class CollectorSettings(Component):
    """The collector: ingest and report partitions"""

    part = "collector"
    port: Port = option(9000, "collector gRPC port (every mutation)", alias="collector_port")
    tracker_cache_ttl: Seconds = option(
        10.0,
        "seconds IngestReports remembers a tracker's id, client and hashed key (a tracker "
        "deleted meanwhile may still get reports that long; 0: look up every message)",
        alias="ingest_tracker_cache_ttl_s",
        **NOT_NEGATIVE,
    )
    max_clock_skew: Seconds = option(
        DEFAULT_MAX_CLOCK_SKEW.total_seconds(),
        "seconds a pushed report's time may lie in the future (source clocks drift), 0..3600",
        alias="report_max_clock_skew_s",
        ge=timedelta(0),
        le=timedelta(hours=1),
    )
    partitions_back_months: int = option(
        1,
        "monthly report partitions kept made before the current month (older: default)",
        alias="report_partitions_back_months",
        ge=0,
        le=120,
    )
    partitions_ahead_months: int = option(
        3,
        "monthly report partitions made ahead of the current month (>= 1)",
        alias="report_partitions_ahead_months",
        ge=1,
        le=24,
    )
    partitions_interval: Seconds = option(
        3600.0,
        "seconds between two maintenance turns of the collector (report partitions made "
        "ahead, rows past their retention deleted)",
        alias="report_partitions_interval_s",
        **POSITIVE,
    )
    retention_sightings: Days = option(
        90.0,
        "days raw detector sightings are kept (travel-time bins stay); a StreamDetectorEvents "
        "cursor older than that is refused (CURSOR_EXPIRED) (0: forever)",
        alias="retention_sightings_days",
        **NOT_NEGATIVE,
    )
    retention_detector_statuses: Days = option(
        365.0,
        "days detector battery/counter readings are kept (0: forever)",
        alias="retention_detector_statuses_days",
        **NOT_NEGATIVE,
    )
    retention_events: Days = option(
        30.0,
        "days change events (and their webhook deliveries) are kept, >= 1; a stream cursor "
        "older than that is refused (CURSOR_EXPIRED) (0: forever)",
        alias="retention_events_days",
        **NOT_NEGATIVE,
    )
    retention_delivered: Days = option(
        7.0,
        "days delivered webhook deliveries are kept (pending and dead ones live as long as "
        "their event; 0: forever)",
        alias="retention_delivered_webhook_days",
        **NOT_NEGATIVE,
    )
    retention_chunk: int = option(
        5000,
        "rows deleted per transaction by retention (at most 200 chunks per kind and turn)",
        alias="retention_chunk",
        ge=100,
        le=100_000,
    )

    def retention_policy(self) -> RetentionPolicy:
        def keep(value: timedelta) -> timedelta | None:
            return value if value > timedelta(0) else None

        return RetentionPolicy(
            {
                Prunable.SIGHTINGS: keep(self.retention_sightings),
                Prunable.DETECTOR_STATUSES: keep(self.retention_detector_statuses),
                Prunable.EVENTS: keep(self.retention_events),
                Prunable.DELIVERED_WEBHOOK_DELIVERIES: keep(self.retention_delivered),
            }
        )

    @model_validator(mode="after")
    def _policy_is_valid(self) -> CollectorSettings:
        try:
            self.retention_policy()
        except InvalidArgument as err:
            kind = err.violations[0].field.removeprefix("retention_")
            raise FieldError(_RETENTION_ALIASES[kind], err.violations[0].reason) from None
        return self


_RETENTION_ALIASES = {
    Prunable.SIGHTINGS.value: "retention_sightings_days",
    Prunable.DETECTOR_STATUSES.value: "retention_detector_statuses_days",
    Prunable.EVENTS.value: "retention_events_days",
    Prunable.DELIVERED_WEBHOOK_DELIVERIES.value: "retention_delivered_webhook_days",
}


class QuerySettings(Component):
    """The query server"""

    part = "query"
    port: Port = option(8000, "query gRPC port (every read)", alias="query_port")


class StatusSettings(Component):
    """Statuses and location history (collector and query)"""

    part = "status"
    hourly_days: int = option(
        7,
        "AUTO location history: hourly roll-ups for this many days, daily before",
        alias="location_history_hourly_days",
        ge=0,
    )


class FetchQueueSettings(Component):
    """The fetch queue in Redis (fetcher, and the query server's FetchQueryService)"""

    part = "fetch_queue"
    prefix: KeyPrefix = option(
        "fetch", "prefix of the fetch queue's Redis keys", alias="fetch_queue_prefix"
    )
    worker_ttl: Seconds = option(
        15.0,
        "a fetcher silent this long is dead and its claims are reclaimed",
        alias="fetch_worker_ttl_s",
        **POSITIVE,
    )


class FindMySettings(Component):
    """Find My accounts and endpoint (fetcher)"""

    part = "findmy"
    account_file: str = option(
        "",
        "findmy account session JSON files (from 'trackerctl findmy login'), comma-separated, "
        "or directories of them: one per Apple account of the fetcher's pool; hold passwords",
        alias="findmy_account_file",
    )
    anisette_server: str = option(
        "",
        "Anisette server URL for every account (overrides the sessions')",
        alias="anisette_server",
        env="ANISETTE_SERVER",
    )
    fetch_url: str = option(
        "https://gateway.icloud.com/findmyservice/v2/fetch",
        "Find My fetch endpoint (Apple's, the simulator's, or a proxy)",
        alias="findmy_fetch_url",
    )
    timeout: Seconds = option(
        30.0, "seconds one Find My fetch may take", alias="findmy_timeout_s", **POSITIVE
    )


class FetcherSettings(Component):
    """The fetcher's schedule and its use of Apple's budget"""

    part = "fetcher"
    keys_per_request: int = option(
        64,
        "tracker keys per Find My request",
        alias="max_keys_per_batch",
        env="MAX_KEYS_PER_BATCH",
        ge=1,
        le=64,
    )
    request_interval: Hours = option(
        0.25,
        "hours between two fetches of one tracker (backoff multiplies it)",
        alias="request_interval_hours",
        env="REQUEST_INTERVAL_HOURS",
        **POSITIVE,
    )
    account_interval: Seconds = option(
        1.0,
        "minimum seconds between two requests on one Find My account",
        alias="fetch_interval_s",
        env="FETCH_INTERVAL",
        **NOT_NEGATIVE,
    )
    max_report_age: Days = option(
        7.0,
        "a fetch never asks for reports older than this",
        alias="max_report_age_days",
        env="MAX_REPORT_AGE_DAYS",
        **POSITIVE,
    )
    max_backoff_factor: PowerOfTwo = option(
        16, "cap of the backoff factor (a power of two)", alias="max_backoff_factor"
    )
    lease: Seconds = option(
        120.0, "seconds a fetcher may hold a claim", alias="fetch_lease_s", **POSITIVE
    )
    heartbeat: Seconds = option(
        5.0, "seconds between a fetcher's heartbeats", alias="fetch_heartbeat_s", **POSITIVE
    )
    queue_check: Seconds = option(
        60.0,
        "seconds between checks of the queue against PostgreSQL (runs started or ended)",
        alias="fetch_queue_check_s",
        **POSITIVE,
    )
    account_cooldown_max: Seconds = option(
        1800.0,
        "longest pause of an account after errors (Retry-After is capped here)",
        alias="fetch_account_cooldown_max_s",
        **POSITIVE,
    )
    account_budget_per_hour: float = option(
        4.0,
        "requests one Apple account may send per hour, spread evenly (0: only FETCH_INTERVAL); "
        "the default follows FindMy.py's maintainer: one request every 15-30 min was fine, "
        "every 5-10 min got accounts banned (docs/fetching.md)",
        alias="fetch_account_budget_per_hour",
        ge=0,
    )
    probe_max: Seconds = option(
        60.0,
        "longest pause between two recovery probes of an account after errors without "
        "Retry-After (one request each)",
        alias="fetch_probe_max_s",
        **POSITIVE,
    )
    overlap: Hours = option(
        6.0,
        "a request asks from the newest report we hold minus this many hours (late uploads)",
        alias="fetch_overlap_h",
        **NOT_NEGATIVE,
    )
    end_grace: Hours = option(
        24.0,
        "hours after a run's end its trackers are still fetched (reports uploaded late)",
        alias="fetch_end_grace_h",
        **NOT_NEGATIVE,
    )
    fill_horizon: float = option(
        0.25,
        "a request with fewer due trackers than MAX_KEYS_PER_BATCH is filled with those due "
        "within this fraction of the interval, soonest first",
        alias="fetch_fill_horizon",
        ge=0,
        le=1,
    )
    source_busy: Seconds = option(
        60.0,
        "after we stopped waiting for a request, Apple may still work on it this many seconds: "
        "its account sends nothing before",
        alias="findmy_busy_s",
        **NOT_NEGATIVE,
    )
    key_cache: int = option(
        250_000,
        "key pairs a fetcher keeps in memory between fetches of a tracker (about 2.8 KB each; "
        "making one costs about a decryption): trackers are shared by every fetcher, so cover "
        "the fleet for a full hit rate; 0 makes one per fetch (docs/fetching.md)",
        alias="fetch_key_cache",
        ge=0,
    )


class WorkerSettings(Component):
    """The processing worker"""

    part = "worker"
    batch_size: int = option(
        10_000,
        "trackers with new reports a worker takes per batch",
        alias="worker_batch_size",
        ge=1,
    )
    idle: Seconds = option(
        1.0,
        "seconds a worker waits when no tracker has new reports",
        alias="worker_idle_s",
        **POSITIVE,
    )
    lease: Seconds = option(
        120.0, "seconds a worker's claim on a batch lasts", alias="worker_lease_s", **POSITIVE
    )
    concurrency: int = option(
        2,
        "batches a worker process runs at once (the database works while Python computes)",
        alias="worker_concurrency",
        ge=1,
    )
    retry_base: Seconds = option(
        30.0,
        "seconds before a quarantined tracker is retried; doubles each failure in a row",
        alias="worker_retry_base_s",
        **POSITIVE,
    )
    retry_max: Seconds = option(
        3600.0,
        "longest wait between retries of a quarantined tracker",
        alias="worker_retry_max_s",
        **POSITIVE,
    )
    metrics_interval: Seconds = option(
        5.0,
        "seconds between readings of the processing queue for the worker's gauges",
        alias="worker_metrics_interval_s",
        **POSITIVE,
    )


class GeocodingSettings(Component):
    """Nearest-city geocoding (worker)"""

    part = "geocoding"
    cache_size: int = option(
        200_000,
        "grid cells the nearest-city cache holds (0: none)",
        alias="geocode_cache_size",
        ge=0,
    )
    cell_deg: float = option(
        0.01,
        "size of a nearest-city cache cell, degrees (0: no cache, a KNN search per report)",
        alias="geocode_cell_deg",
        ge=0,
        le=1,
    )


class AllInOneSettings(Component):
    """The all-in-one process (make run)"""

    part = "all_in_one"
    demo: bool = option(
        False,
        "all-in-one only: run the Find My simulator with demo trackers "
        "and fetch them periodically (make run turns it on)",
        alias="demo",
    )
    demo_simulator_port: Port = option(
        8811, "port of the demo's Find My simulator", alias="demo_simulator_port"
    )
    demo_fetch_interval: Seconds = option(
        15.0, "seconds between the demo's fetches", alias="demo_fetch_interval_s", **POSITIVE
    )
    worker_in_process: bool = option(
        True,
        "all-in-one only: run the worker loop too, so statuses follow reports",
        alias="worker_in_process",
    )


class DetectorSettings(Component):
    """Detectors: keyed device ids, travel times, streams (issue 16, docs/detectors.md)"""

    part = "detectors"
    device_keys: SecretStr = option(
        "",
        "keys of device ids (HMAC-SHA256 of MACs): 'id=base64(>= 32 bytes),older=...', ids "
        "1..32767; the active one keys new sightings. Default: derived from the JWT signing key",
        alias="device_keys",
    )
    device_keys_file: str = option(
        "", "file holding device_keys (a mounted Secret); wins", alias="device_keys_file"
    )
    device_key_active_id: int = option(
        0,
        "device key id that keys new sightings (0: the first)",
        alias="device_key_active_id",
        ge=0,
        le=32767,
    )
    bin_s: int = option(
        300,
        "travel-time bin, seconds (by arrival at the destination)",
        alias="travel_time_bin_s",
        ge=60,
        le=3600,
    )
    pass_gap: Seconds = option(
        30.0,
        "detections of one device at one detector closer than this are one pass",
        alias="travel_time_pass_gap_s",
        **POSITIVE,
    )
    outlier_k: float = option(
        3.0,
        "outlier threshold: robust deviations (1.4826 MAD) from the window median",
        alias="travel_time_outlier_k",
        gt=0,
    )
    lease: Seconds = option(
        60.0,
        "seconds a worker's claim on a destination lasts",
        alias="travel_time_lease_s",
        **POSITIVE,
    )
    interval: Seconds = option(
        30.0,
        "seconds between two travel-time turns of one destination",
        alias="travel_time_interval_s",
        **POSITIVE,
    )
    redo: Seconds = option(
        1800.0,
        "seconds of bins recomputed on every turn (late sightings, open windows)",
        alias="travel_time_redo_s",
        **NOT_NEGATIVE,
    )
    workers: int = option(
        1,
        "travel-time loops per worker process (0: none)",
        alias="travel_time_workers",
        ge=0,
        le=16,
    )
    stream_poll: Seconds = option(
        0.5,
        "seconds between two polls of a StreamDetectorEvents/StreamTravelTimes stream",
        alias="detector_stream_poll_s",
        **POSITIVE,
    )


class JobSettings(Component):
    """Bulk jobs (issue 17: collector, query server, worker)"""

    part = "jobs"
    items_per_second: float = option(
        DEFAULT_ITEMS_PER_SECOND,
        "bulk jobs: default throttle, items per second over all workers (per job)",
        alias="job_items_per_second",
        gt=0,
        le=MAX_ITEMS_PER_SECOND,
    )
    batch_size: int = option(
        DEFAULT_BATCH_SIZE,
        "bulk jobs: default items per batch (one transaction each)",
        alias="job_batch_size",
        ge=1,
        le=MAX_JOB_BATCH_SIZE,
    )
    lease: Seconds = option(
        60.0,
        "bulk jobs: seconds a worker's claim on a batch lasts (then another takes it)",
        alias="job_lease_s",
        **POSITIVE,
    )
    idle: Seconds = option(
        0.5,
        "bulk jobs: seconds a worker waits when no batch is due",
        alias="job_idle_s",
        **POSITIVE,
    )
    watch_interval: Seconds = option(
        0.5,
        "bulk jobs: seconds between WatchJob's readings",
        alias="job_watch_interval_s",
        **POSITIVE,
    )

    def defaults(self) -> JobDefaults:
        return JobDefaults(items_per_second=self.items_per_second, batch_size=self.batch_size)


class SilenceSettings(Component):
    """Silent trackers (issue 17: query server, worker)"""

    part = "silence"
    factor: float = option(
        DEFAULT_FACTOR,
        "silent trackers: silent after missing its cadence by this factor",
        alias="silence_factor",
        ge=1,
        le=1000,
    )
    default_cadence: Seconds = option(
        DEFAULT_CADENCE.total_seconds(),
        "silent trackers: cadence until one is learned",
        alias="silence_default_cadence_s",
        **POSITIVE,
    )
    min_cadence: Seconds = option(
        MIN_CADENCE.total_seconds(),
        "silent trackers: shortest learned cadence (and bucket)",
        alias="silence_min_cadence_s",
        **POSITIVE,
    )
    max_cadence: Seconds = option(
        MAX_CADENCE.total_seconds(),
        "silent trackers: longest learned cadence",
        alias="silence_max_cadence_s",
        **POSITIVE,
    )
    chunk: int = option(
        2000,
        "silent trackers: trackers whose cadence one turn learns",
        alias="silence_chunk",
        ge=1,
        le=100_000,
    )
    interval: Seconds = option(
        2.0, "silent trackers: seconds between two turns", alias="silence_interval_s", **POSITIVE
    )

    @model_validator(mode="after")
    def _rule_holds(self) -> SilenceSettings:
        try:
            self.rule()
        except InvalidArgument as err:
            raise FieldError(err.violations[0].field, err.violations[0].reason) from None
        return self

    def rule(self) -> SilenceRule:
        return SilenceRule(
            factor=self.factor,
            default_cadence=self.default_cadence,
            min_cadence=self.min_cadence,
            max_cadence=self.max_cadence,
        )


class OutageSettings(Component):
    """Outage detection (issue 17: worker)"""

    part = "outages"
    jump: float = option(
        DEFAULT_JUMP,
        "outages: rise of a cohort's silent share over its baseline (0..1)",
        alias="outage_jump",
        gt=0,
        le=1,
    )
    min_silent: int = option(
        DEFAULT_MIN_SILENT,
        "outages: silent trackers a cohort needs",
        alias="outage_min_silent",
        ge=1,
    )
    baseline_window: Seconds = option(
        DEFAULT_BASELINE_WINDOW.total_seconds(),
        "outages: seconds of snapshots in a cohort's baseline",
        alias="outage_baseline_window_s",
        **POSITIVE,
    )
    interval: Seconds = option(
        60.0, "outages: seconds between two detection turns", alias="outage_interval_s", **POSITIVE
    )

    def rule(self) -> OutageRule:
        return OutageRule(
            jump=self.jump, min_silent=self.min_silent, baseline_window=self.baseline_window
        )


class EventSettings(Component):
    """Changes pushed: event streams and webhooks (issue 17: query server, worker)"""

    part = "events"
    stream_poll: Seconds = option(
        0.5,
        "events: seconds between a StreamEvents' reads of new events",
        alias="events_stream_poll_s",
        **POSITIVE,
    )
    stream_heartbeat: Seconds = option(
        15.0,
        "events: seconds of quiet after which a StreamEvents sends its cursor",
        alias="events_stream_heartbeat_s",
        **POSITIVE,
    )
    webhook_timeout: Seconds = option(
        10.0,
        "webhooks: seconds one POST may take (then it counts as failed)",
        alias="webhook_timeout_s",
        **POSITIVE,
    )
    webhook_max_attempts: int = option(
        8,
        "webhooks: attempts before a delivery is dead (the dead-letter list)",
        alias="webhook_max_attempts",
        ge=1,
        le=100,
    )
    webhook_backoff_base: Seconds = option(
        5.0,
        "webhooks: pause after the first failed attempt (doubled each time, with jitter)",
        alias="webhook_backoff_base_s",
        **POSITIVE,
    )
    webhook_backoff_max: Seconds = option(
        3600.0,
        "webhooks: longest pause between two attempts",
        alias="webhook_backoff_max_s",
        **POSITIVE,
    )
    webhook_batch: int = option(
        50,
        "webhooks: deliveries one worker turn claims (sent concurrently)",
        alias="webhook_batch",
        ge=1,
        le=1000,
    )
    webhook_idle: Seconds = option(
        0.5, "webhooks: seconds a worker waits when none is due", alias="webhook_idle_s", **POSITIVE
    )

    @model_validator(mode="after")
    def _lease_covers_timeout(self) -> EventSettings:
        if self.webhook_backoff_max < self.webhook_backoff_base:
            raise FieldError("webhook_backoff_max_s", "must not be below webhook_backoff_base_s")
        return self

    @property
    def webhook_lease(self) -> timedelta:
        """A claimed delivery is tried again after this if its worker died: past the POST's
        timeout, so a live attempt is not doubled."""
        return self.webhook_timeout * 2 + timedelta(seconds=5)

    def delivery_policy(self) -> DeliveryPolicy:
        return DeliveryPolicy(
            max_attempts=self.webhook_max_attempts,
            base=self.webhook_backoff_base,
            max_backoff=self.webhook_backoff_max,
        )


COMPONENTS: tuple[type[Component], ...] = (
    LoggingSettings,
    TelemetrySettings,
    ServerSettings,
    HealthSettings,
    DatabaseSettings,
    RedisSettings,
    SecuritySettings,
    LoginSettings,
    CollectorSettings,
    QuerySettings,
    StatusSettings,
    FetchQueueSettings,
    FindMySettings,
    FetcherSettings,
    WorkerSettings,
    GeocodingSettings,
    AllInOneSettings,
    DetectorSettings,
    JobSettings,
    SilenceSettings,
    OutageSettings,
    EventSettings,
)
