"""Configuration, in one typed object: defaults < YAML file < environment < command line.

Every option has a field here with its environment name and help text; ``--help`` of each
process lists them all. Nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import yaml

from domain.instants import DEFAULT_MAX_CLOCK_SKEW
from domain.limits import MAX_MESSAGE_BYTES
from domain.throttling import AttemptLimit, LoginLimits

CONFIG_ENV = "TRACKER_CONFIG"


def _opt(default: Any, help: str, env: str | None = None, secret: bool = False) -> Any:
    return field(default=default, metadata={"help": help, "env": env, "secret": secret})


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = _opt(
        "postgresql://postgres@127.0.0.1:5432/tracker", "PostgreSQL URL", secret=True
    )
    redis_url: str = _opt("redis://127.0.0.1:6379/0", "Redis URL", secret=True)
    bind_host: str = _opt("127.0.0.1", "address the gRPC servers listen on (0.0.0.0: all)")
    collector_port: int = _opt(9000, "collector gRPC port (every mutation)")
    query_port: int = _opt(8000, "query gRPC port (every read)")
    health_port: int = _opt(5000, "grpc.health.v1 port for probes (0: none)")
    metrics_port: int = _opt(9464, "Prometheus /metrics HTTP port (0: none)")
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _opt("json", "json (one object per line) or text")
    db_pool_max: int = _opt(10, "PostgreSQL connections per process")
    health_check_interval_s: float = _opt(2.0, "seconds between dependency checks")
    health_check_timeout_s: float = _opt(1.0, "seconds a dependency check may take")
    shutdown_grace_s: float = _opt(10.0, "seconds in-flight RPCs get on shutdown")
    # --- rollouts (issue 15): drain on SIGTERM, connection age ---
    shutdown_drain_s: float = _opt(
        5.0,
        "seconds a stopping process keeps serving while its health says NOT_SERVING, before "
        "it refuses new calls: load balancers and Kubernetes endpoints move callers away "
        "first (a second SIGTERM/SIGINT cuts it short)",
    )
    grpc_max_connection_age_s: float = _opt(
        300.0,
        "a client's connection is closed (GOAWAY) after this many seconds, so long-lived "
        "HTTP/2 connections spread over new replicas (0: never)",
    )
    grpc_max_connection_age_grace_s: float = _opt(
        30.0, "seconds calls on a connection closed for its age may still run"
    )
    environment: str = _opt(
        "development", "development or production (production refuses insecure defaults)"
    )
    jwt_signing_key: str = _opt(
        "", "secret (>= 32 bytes) that signs access tokens; shared by every process", secret=True
    )
    jwt_signing_key_file: str = _opt(
        "", "file holding the signing key (e.g. a mounted Secret); wins over jwt_signing_key"
    )
    kek_ring: str = _opt(
        "", "key-encryption keys sealing private keys: 'id=base64(32 bytes),id2=...'", secret=True
    )
    kek_ring_file: str = _opt("", "file holding the KEK ring (a mounted Secret); wins")
    page_token_keys: str = _opt(
        "",
        "keys signing page tokens (HMAC-SHA256): 'id=base64(>= 32 bytes),older=...'; the first "
        "signs, all verify (rotation); the same for every query replica. Default: derived from "
        "the JWT signing key",
        secret=True,
    )
    kek_active_id: str = _opt("", "KEK id that seals new keys (default: the ring's first)")
    findmy_account_file: str = _opt(
        "",
        "findmy account session JSON files (from 'trackerctl findmy login'), comma-separated, "
        "or directories of them: one per Apple account of the fetcher's pool; hold passwords",
    )
    anisette_server: str = _opt(
        "", "Anisette server URL for every account (overrides the sessions')", env="ANISETTE_SERVER"
    )
    findmy_fetch_url: str = _opt(
        "https://gateway.icloud.com/findmyservice/v2/fetch",
        "Find My fetch endpoint (Apple's, the simulator's, or a proxy)",
    )
    findmy_timeout_s: float = _opt(30.0, "seconds one Find My fetch may take")
    max_keys_per_batch: int = _opt(64, "tracker keys per Find My request", env="MAX_KEYS_PER_BATCH")
    request_interval_hours: float = _opt(
        0.25,
        "hours between two fetches of one tracker (backoff multiplies it)",
        env="REQUEST_INTERVAL_HOURS",
    )
    fetch_interval_s: float = _opt(
        1.0, "minimum seconds between two requests on one Find My account", env="FETCH_INTERVAL"
    )
    max_report_age_days: float = _opt(
        7.0, "a fetch never asks for reports older than this", env="MAX_REPORT_AGE_DAYS"
    )
    max_backoff_factor: int = _opt(16, "cap of the backoff factor (a power of two)")
    fetch_lease_s: float = _opt(120.0, "seconds a fetcher may hold a claim")
    fetch_heartbeat_s: float = _opt(5.0, "seconds between a fetcher's heartbeats")
    fetch_worker_ttl_s: float = _opt(
        15.0, "a fetcher silent this long is dead and its claims are reclaimed"
    )
    fetch_queue_check_s: float = _opt(
        60.0, "seconds between checks of the queue against PostgreSQL (runs started or ended)"
    )
    fetch_queue_prefix: str = _opt("fetch", "prefix of the fetch queue's Redis keys")
    fetch_account_cooldown_max_s: float = _opt(
        1800.0, "longest pause of an account after errors (Retry-After is capped here)"
    )
    fetch_account_budget_per_hour: float = _opt(
        4.0,
        "requests one Apple account may send per hour, spread evenly (0: only FETCH_INTERVAL); "
        "the default follows FindMy.py's maintainer: one request every 15-30 min was fine, "
        "every 5-10 min got accounts banned (docs/fetching.md)",
    )
    fetch_probe_max_s: float = _opt(
        60.0,
        "longest pause between two recovery probes of an account after errors without "
        "Retry-After (one request each)",
    )
    fetch_overlap_h: float = _opt(
        6.0,
        "a request asks from the newest report we hold minus this many hours (late uploads)",
    )
    fetch_end_grace_h: float = _opt(
        24.0, "hours after a run's end its trackers are still fetched (reports uploaded late)"
    )
    fetch_fill_horizon: float = _opt(
        0.25,
        "a request with fewer due trackers than MAX_KEYS_PER_BATCH is filled with those due "
        "within this fraction of the interval, soonest first",
    )
    findmy_busy_s: float = _opt(
        60.0,
        "after we stopped waiting for a request, Apple may still work on it this many seconds: "
        "its account sends nothing before",
    )
    db_host: str = _opt("", "overrides the host of database_url", env="DB_HOST")
    db_port: int = _opt(0, "overrides the port of database_url (0: keep)", env="DB_PORT")
    db_name: str = _opt("", "overrides the database of database_url", env="DB_NAME")
    db_user: str = _opt("", "overrides the user of database_url", env="DB_USER")
    db_password: str = _opt(
        "", "overrides the password of database_url", env="DB_PASSWORD", secret=True
    )
    demo: bool = _opt(
        False,
        "all-in-one only: run the Find My simulator with demo trackers "
        "and fetch them periodically (make run turns it on)",
    )
    demo_simulator_port: int = _opt(8811, "port of the demo's Find My simulator")
    demo_fetch_interval_s: float = _opt(15.0, "seconds between the demo's fetches")
    access_token_ttl_s: float = _opt(900.0, "lifetime of access tokens from Login, seconds")
    refresh_token_ttl_s: float = _opt(30 * 86400.0, "lifetime of refresh tokens, seconds")
    auth_cache_ttl_s: float = _opt(
        2.0,
        "seconds a token's user is remembered without asking PostgreSQL (a user deleted or "
        "changed through another process keeps its access that long; 0: ask on every call)",
    )
    ingest_tracker_cache_ttl_s: float = _opt(
        10.0,
        "seconds IngestReports remembers a tracker's id, client and hashed key (a tracker "
        "deleted meanwhile may still get reports that long; 0: look up every message)",
    )
    # --- sign-in abuse (issue 10) ---
    login_max_failures_per_account: int = _opt(
        10, "failed sign-ins per account (e-mail, known or not) in a window before a lockout"
    )
    login_max_failures_per_address: int = _opt(
        100, "failed sign-ins (and token refreshes) per source address in a window"
    )
    login_window_s: float = _opt(900.0, "seconds of the window failed sign-ins are counted in")
    login_lockout_s: float = _opt(
        60.0, "seconds of the first lockout; each further one within 24 h doubles it"
    )
    login_lockout_max_s: float = _opt(900.0, "longest lockout, seconds")
    login_address_header: str = _opt(
        "",
        "metadata header a trusted proxy puts the client's address in (e.g. x-forwarded-for; "
        "its last entry counts); empty: the TCP peer's address",
    )
    login_trusted_proxies: str = _opt(
        "",
        "comma-separated networks of proxies whose address header is believed "
        "(empty: believed from any peer, when the header is set)",
    )
    login_throttle_prefix: str = _opt("login", "prefix of the sign-in throttle's Redis keys")
    password_hash_concurrency: int = _opt(
        2, "password hashes (64 MiB each) computed at once per process"
    )
    password_hash_queue: int = _opt(
        32, "password checks that may wait for a slot; more are refused (RESOURCE_EXHAUSTED)"
    )
    # --- processing (worker; issue 6) ---
    worker_batch_size: int = _opt(2000, "trackers with new reports a worker takes per batch")
    worker_idle_s: float = _opt(1.0, "seconds a worker waits when no tracker has new reports")
    worker_lease_s: float = _opt(120.0, "seconds a worker's claim on a batch lasts")
    worker_concurrency: int = _opt(
        2, "batches a worker process runs at once (the database works while Python computes)"
    )
    worker_in_process: bool = _opt(
        True, "all-in-one only: run the worker loop too, so statuses follow reports"
    )
    worker_retry_base_s: float = _opt(
        30.0, "seconds before a quarantined tracker is retried; doubles each failure in a row"
    )
    worker_retry_max_s: float = _opt(
        3600.0, "longest wait between retries of a quarantined tracker"
    )
    worker_metrics_interval_s: float = _opt(
        5.0, "seconds between readings of the processing queue for the worker's gauges"
    )
    geocode_cache_size: int = _opt(200_000, "grid cells the nearest-city cache holds (0: none)")
    geocode_cell_deg: float = _opt(
        0.01, "size of a nearest-city cache cell, degrees (0: no cache, a KNN search per report)"
    )
    location_history_hourly_days: int = _opt(
        7, "AUTO location history: hourly roll-ups for this many days, daily before"
    )
    # --- input bounds and report partitions (issue 10) ---
    max_message_bytes: int = _opt(
        MAX_MESSAGE_BYTES,
        "largest gRPC request message a server accepts (larger: RESOURCE_EXHAUSTED)",
    )
    report_max_clock_skew_s: float = _opt(
        DEFAULT_MAX_CLOCK_SKEW.total_seconds(),
        "seconds a pushed report's time may lie in the future (source clocks drift), 0..3600",
    )
    report_partitions_back_months: int = _opt(
        1, "monthly report partitions kept made before the current month (older: default)"
    )
    report_partitions_ahead_months: int = _opt(
        3, "monthly report partitions made ahead of the current month (>= 1)"
    )
    report_partitions_interval_s: float = _opt(
        3600.0, "seconds between two partition maintenance turns of the collector"
    )

    @staticmethod
    def env_name(name: str) -> str:
        f = Settings.__dataclass_fields__[name]
        return f.metadata.get("env") or f"TRACKER_{name.upper()}"

    def redacted(self) -> dict[str, Any]:
        """The settings as loggable values: secrets and URL credentials hidden."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and isinstance(value, str) and value:
                value = _redact_url(value) if "://" in value else "***"
            out[f.name] = value
        return out


def _redact_url(value: str) -> str:
    """Hide the password of a URL, in its user part and in a ``password=`` parameter."""
    parts = urlsplit(value)
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in creds else f"{user}@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() in {"password", "pass", "passwd"} else (f"{k}={v}" if v else k)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class ConfigError(ValueError):
    pass


def _coerce(name: str, raw: Any, typ: type, source: str) -> Any:
    """Text from the environment or a flag is parsed; a YAML value must have the right type."""
    problem = f"{source}: {name} must be {typ.__name__}, got {raw!r}"
    if not isinstance(raw, str):
        if isinstance(raw, bool):
            ok = typ is bool
        elif isinstance(raw, int):
            ok = typ in (int, float)
        else:
            ok = isinstance(raw, float) and typ is float
        if not ok:
            raise ConfigError(problem)
        return typ(raw)
    try:
        if typ is bool:
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        return typ(raw)
    except (TypeError, ValueError):
        raise ConfigError(problem) from None


def _types() -> dict[str, type]:
    hints = {"str": str, "int": int, "float": float, "bool": bool}
    return {f.name: hints[str(f.type)] for f in dataclasses.fields(Settings)}


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=description,
        epilog="Precedence: defaults < YAML file (--config or $TRACKER_CONFIG) < environment "
        "< command line.",
    )
    p.add_argument("--config", metavar="FILE", help=f"YAML file of settings [env {CONFIG_ENV}]")
    for f in dataclasses.fields(Settings):
        p.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            help=f"{f.metadata['help']} [env {Settings.env_name(f.name)}] (default: {f.default})",
        )
    return p


def load(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    description: str = "Tracker Services",
) -> Settings:
    args = parser(description).parse_args(argv)
    return from_sources(vars(args), os.environ if env is None else env)


def from_sources(cli: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    types = _types()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    path = cli.get("config") or env.get(CONFIG_ENV)
    if path:
        try:
            loaded = yaml.safe_load(pathlib.Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping of settings")
        unknown = set(loaded) - set(types)
        if unknown:
            raise ConfigError(f"config file {path}: unknown settings {sorted(map(str, unknown))}")
        for name, raw in loaded.items():
            sources[name] = f"config file {path}"
            values[name] = _coerce(name, raw, types[name], sources[name])
    for name, typ in types.items():
        env_name = Settings.env_name(name)
        if env_name in env:
            sources[name] = f"environment {env_name}"
            values[name] = _coerce(name, env[env_name], typ, sources[name])
    for name, typ in types.items():
        if cli.get(name) is not None:
            sources[name] = "--" + name.replace("_", "-")
            values[name] = _coerce(name, cli[name], typ, sources[name])
    settings = Settings(**values)
    if any(
        (
            settings.db_host,
            settings.db_port,
            settings.db_name,
            settings.db_user,
            settings.db_password,
        )
    ):
        settings = dataclasses.replace(settings, database_url=compose_database_url(settings))
    for name, check in _CHECKS.items():
        problem = check(getattr(settings, name))
        if problem:
            raise ConfigError(f"{sources.get(name, 'default')}: {name} {problem}")
    return settings


def compose_database_url(s: Settings) -> str:
    """``database_url`` with the parts the seed's DB_HOST/DB_PORT/DB_NAME/DB_USER/DB_PASSWORD
    set replaced (they win over the URL's; the rest of the URL stays)."""
    parts = urlsplit(s.database_url)
    user = s.db_user or (parts.username or "")
    password = s.db_password or (parts.password or "")
    host = s.db_host or (parts.hostname or "")
    port = s.db_port or parts.port
    creds = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    hostport = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    netloc = f"{creds}@{hostport}" if creds else hostport
    path = "/" + s.db_name if s.db_name else parts.path
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def _port(v: int) -> str | None:
    return None if 0 <= v <= 65535 else "must be within 0..65535"


def _positive(v: float) -> str | None:
    return None if math.isfinite(v) and v > 0 else "must be a finite number > 0"


def _not_negative(v: float) -> str | None:
    return None if math.isfinite(v) and v >= 0 else "must be a finite number >= 0"


def _networks(v: str) -> str | None:
    try:
        for part in v.split(","):
            if part.strip():
                ipaddress.ip_network(part.strip(), strict=False)
    except ValueError:
        return "must be comma-separated networks, e.g. 10.0.0.0/8,fd00::/8"
    return None


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v.lower() in choices else f"must be one of {', '.join(choices)}"

    return check


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "collector_port": _port,
    "query_port": _port,
    "health_port": _port,
    "metrics_port": _port,
    "log_format": _one_of("json", "text"),
    "log_level": _one_of("debug", "info", "warning", "error"),
    "db_pool_max": lambda v: None if v >= 1 else "must be >= 1",
    "geocode_cell_deg": lambda v: None if 0 <= v <= 1 else "must be within 0..1 (0: no cache)",
    "geocode_cache_size": lambda v: None if v >= 0 else "must be >= 0 (0: no cache)",
    "health_check_interval_s": _positive,
    "health_check_timeout_s": _positive,
    "shutdown_grace_s": _not_negative,
    "shutdown_drain_s": _not_negative,
    "grpc_max_connection_age_s": _not_negative,
    "grpc_max_connection_age_grace_s": _not_negative,
    "environment": _one_of("development", "production"),
    "access_token_ttl_s": _positive,
    "findmy_timeout_s": _positive,
    "demo_simulator_port": _port,
    "demo_fetch_interval_s": _positive,
    "max_keys_per_batch": lambda v: None if 1 <= v <= 64 else "must be within 1..64",
    "refresh_token_ttl_s": _positive,
    "auth_cache_ttl_s": _not_negative,
    "ingest_tracker_cache_ttl_s": _not_negative,
    "request_interval_hours": _positive,
    "fetch_interval_s": _not_negative,
    "max_report_age_days": _positive,
    "max_backoff_factor": lambda v: (
        None if v >= 1 and not v & (v - 1) else "must be a power of two >= 1"
    ),
    "fetch_lease_s": _positive,
    "worker_retry_base_s": _positive,
    "worker_retry_max_s": _positive,
    "worker_metrics_interval_s": _positive,
    "fetch_heartbeat_s": _positive,
    "fetch_worker_ttl_s": _positive,
    "fetch_queue_check_s": _positive,
    "fetch_account_cooldown_max_s": _positive,
    "fetch_account_budget_per_hour": _not_negative,
    "fetch_probe_max_s": _positive,
    "fetch_overlap_h": _not_negative,
    "fetch_end_grace_h": _not_negative,
    "fetch_fill_horizon": lambda v: None if 0 <= v <= 1 else "must be within 0..1",
    "findmy_busy_s": _not_negative,
    "db_port": _port,
    "login_max_failures_per_account": lambda v: None if v >= 1 else "must be >= 1",
    "login_max_failures_per_address": lambda v: None if v >= 1 else "must be >= 1",
    "login_window_s": _positive,
    "login_lockout_s": _positive,
    "login_lockout_max_s": _positive,
    "login_address_header": lambda v: (
        None
        if not v or (len(v) <= 64 and v.replace("-", "").replace("_", "").isalnum())
        else "must be a metadata header name (letters, digits, '-', '_')"
    ),
    "login_trusted_proxies": lambda v: _networks(v),
    "login_throttle_prefix": lambda v: (
        None
        if v and len(v) <= 64 and v.replace("-", "").replace("_", "").replace(":", "").isalnum()
        else "must be 1..64 letters, digits, '-', '_' or ':'"
    ),
    "password_hash_concurrency": lambda v: None if 1 <= v <= 64 else "must be within 1..64",
    "password_hash_queue": lambda v: None if 0 <= v <= 10_000 else "must be within 0..10000",
    "fetch_queue_prefix": lambda v: (
        None
        if v and len(v) <= 64 and v.replace("-", "").replace("_", "").replace(":", "").isalnum()
        else "must be 1..64 letters, digits, '-', '_' or ':'"
    ),
    "max_message_bytes": lambda v: (
        None if 64 * 1024 <= v <= 64 * 1024 * 1024 else "must be within 65536..67108864"
    ),
    "report_max_clock_skew_s": lambda v: (
        None if math.isfinite(v) and 0 <= v <= 3600 else "must be within 0..3600"
    ),
    "report_partitions_back_months": lambda v: None if 0 <= v <= 120 else "must be within 0..120",
    "report_partitions_ahead_months": lambda v: None if 1 <= v <= 24 else "must be within 1..24",
    "report_partitions_interval_s": _positive,
}

# Used only in development, never in production: tokens signed with it are worthless.
DEVELOPMENT_SIGNING_KEY = "tracker-services-development-only-signing-key-0000"


DEVELOPMENT_KEK_RING = "dev=" + "ZGV2ZWxvcG1lbnQtb25seS1rZWstMDAwMDAwMDAwMDA="


def kek_ring(s: Settings) -> tuple[dict[str, bytes], str]:
    """The KEK ring and the active KEK id; like the signing key, required in production."""
    text = s.kek_ring
    if s.kek_ring_file:
        try:
            text = pathlib.Path(s.kek_ring_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"kek_ring_file: {exc}") from None
    if not text:
        if s.environment == "production":
            raise ConfigError(
                "production needs a KEK ring: set TRACKER_KEK_RING or TRACKER_KEK_RING_FILE"
            )
        text = DEVELOPMENT_KEK_RING
    ring: dict[str, bytes] = {}
    for item in text.split(","):
        kek_id, sep, b64 = item.strip().partition("=")
        try:
            key = base64.b64decode(b64, validate=True) if sep else b""
        except ValueError:
            key = b""
        if not kek_id or len(key) != 32:
            raise ConfigError(f"kek_ring: entry {kek_id or item!r} must be id=base64(32 bytes)")
        ring[kek_id] = key
    active = s.kek_active_id or next(iter(ring))
    if active not in ring:
        raise ConfigError(f"kek_active_id {active!r} is not in the KEK ring")
    return ring, active


def page_token_keys(s: Settings) -> tuple[dict[str, bytes], str]:
    """The keys signing page tokens and the id of the one that signs new tokens.

    Unset, one key is derived from the JWT signing key (HMAC-SHA256 under a label of its
    own, so neither key reveals the other); its id is a digest of it, so a token made before
    the signing key changed is refused as made with a retired key.
    """
    text = s.page_token_keys.strip()
    if not text:
        derived = hmac.new(signing_key(s), b"tracker.v1 page tokens", hashlib.sha256).digest()
        key_id = "d" + hashlib.sha256(derived).hexdigest()[:12]
        return {key_id: derived}, key_id
    ring: dict[str, bytes] = {}
    for item in text.split(","):
        key_id, sep, b64 = item.strip().partition("=")
        try:
            key = base64.b64decode(b64, validate=True) if sep else b""
        except ValueError:
            key = b""
        valid_id = (
            0 < len(key_id) <= 32
            and key_id.isascii()
            and key_id.replace("-", "").replace("_", "").isalnum()
        )
        if not valid_id or len(key) < 32:
            raise ConfigError(
                f"page_token_keys: entry {key_id or item!r} must be id=base64(>= 32 bytes), "
                "id of 1..32 letters, digits, '-' or '_'"
            )
        ring[key_id] = key
    return ring, next(iter(ring))


def signing_key(s: Settings) -> bytes:
    """The JWT signing key: from the file, else the setting; a development default only
    outside production. A missing or short key in production is a start-up error."""
    key = s.jwt_signing_key
    if s.jwt_signing_key_file:
        try:
            key = pathlib.Path(s.jwt_signing_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"jwt_signing_key_file: {exc}") from None
    if not key:
        if s.environment == "production":
            raise ConfigError(
                "production needs a JWT signing key: set TRACKER_JWT_SIGNING_KEY or "
                "TRACKER_JWT_SIGNING_KEY_FILE"
            )
        key = DEVELOPMENT_SIGNING_KEY
    if len(key.encode()) < 32:
        raise ConfigError("the JWT signing key must have at least 32 bytes")
    return key.encode()


def check_secrets(s: Settings) -> None:
    """Every secret a process needs, checked at start. In production the published
    development signing key or KEK, and a signing key equal to a KEK (one leak would expose
    both), are refused with a ConfigError saying which and what to do."""
    key = signing_key(s)
    ring, _ = kek_ring(s)
    if s.environment != "production":
        return
    advice = "generate one with: head -c 32 /dev/urandom | base64"
    if key == DEVELOPMENT_SIGNING_KEY.encode():
        raise ConfigError(
            "the JWT signing key is the published development key: anyone could mint tokens; "
            + advice
        )
    dev_kek = base64.b64decode(DEVELOPMENT_KEK_RING.partition("=")[2])
    for kek_id, kek in ring.items():
        if kek == dev_kek:
            raise ConfigError(
                f"KEK {kek_id!r} is the published development KEK: sealed private keys would "
                "be readable by anyone; " + advice
            )
        if key in (kek, base64.b64encode(kek)):
            raise ConfigError(
                f"the JWT signing key equals KEK {kek_id!r}: use two independent secrets; " + advice
            )


def login_limits(s: Settings) -> LoginLimits:
    """The sign-in limits of ``domain.throttling`` from the settings."""
    if s.login_lockout_max_s < s.login_lockout_s:
        raise ConfigError("login_lockout_max_s must be >= login_lockout_s")

    def limit(max_attempts: int) -> AttemptLimit:
        return AttemptLimit(
            max_attempts=max_attempts,
            window=timedelta(seconds=s.login_window_s),
            first_lockout=timedelta(seconds=s.login_lockout_s),
            max_lockout=timedelta(seconds=s.login_lockout_max_s),
        )

    return LoginLimits(
        per_account=limit(s.login_max_failures_per_account),
        per_address=limit(s.login_max_failures_per_address),
    )
