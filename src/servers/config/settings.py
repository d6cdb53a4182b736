"""``Settings``: the components' settings side by side, and which process loads which."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from servers.config.base import Component, ConfigError, in_unit
from servers.config.components import (
    COMPONENTS,
    AllInOneSettings,
    CollectorSettings,
    DatabaseSettings,
    DetectorSettings,
    EventSettings,
    FetcherSettings,
    FetchQueueSettings,
    FindMySettings,
    GeocodingSettings,
    HealthSettings,
    JobSettings,
    LoggingSettings,
    LoginSettings,
    OutageSettings,
    QuerySettings,
    RedisSettings,
    SecuritySettings,
    ServerSettings,
    SilenceSettings,
    StatusSettings,
    TelemetrySettings,
    WorkerSettings,
)

EVERY_PROCESS = ("logging", "telemetry", "server", "health")
PROCESS_PARTS: dict[str, tuple[str, ...]] = {
    "collector": (
        *EVERY_PROCESS,
        *("database", "redis", "security", "login", "collector", "status"),
        *("detectors", "jobs"),
    ),
    "query": (
        *EVERY_PROCESS,
        *("database", "redis", "security", "login", "query", "status", "fetch_queue"),
        *("detectors", "jobs", "silence"),
        "events",
    ),
    "health": (*EVERY_PROCESS, "database", "redis"),
    "fetcher": (
        *EVERY_PROCESS,
        *("database", "redis", "security", "fetch_queue", "findmy", "fetcher"),
    ),
    "worker": (
        *EVERY_PROCESS,
        *("database", "worker", "geocoding", "detectors", "jobs", "silence", "outages"),
        *("security", "events"),
    ),
    "all_in_one": tuple(c.part for c in COMPONENTS),
    "trackerctl": tuple(c.part for c in COMPONENTS),
}
"""The components each process loads and validates; the others stay unloaded (``Unloaded``)."""

BY_PART: dict[str, type[Component]] = {c.part: c for c in COMPONENTS}
BY_ALIAS: dict[str, type[Component]] = {a: c for c in COMPONENTS for a in c.aliases()}
"""Flat name (YAML key, flag, the environment's name without ``TRACKER_``) -> component."""


class Unloaded:
    """In place of a component the process did not load: any use is a ConfigError (a
    process reading settings it does not load is a wiring defect)."""

    def __init__(self, part: str) -> None:
        self._part = part

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ConfigError(f"this process does not load the {self._part} settings ({name})")

    def __repr__(self) -> str:
        return f"Unloaded({self._part!r})"


class Settings(BaseModel):
    """Every component's settings. ``Settings()`` are the defaults; the flat names are
    accepted too (``Settings(database_url=..., fetch_interval_s=0.2)``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    login: LoginSettings = Field(default_factory=LoginSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    query: QuerySettings = Field(default_factory=QuerySettings)
    status: StatusSettings = Field(default_factory=StatusSettings)
    fetch_queue: FetchQueueSettings = Field(default_factory=FetchQueueSettings)
    findmy: FindMySettings = Field(default_factory=FindMySettings)
    fetcher: FetcherSettings = Field(default_factory=FetcherSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    geocoding: GeocodingSettings = Field(default_factory=GeocodingSettings)
    all_in_one: AllInOneSettings = Field(default_factory=AllInOneSettings)
    detectors: DetectorSettings = Field(default_factory=DetectorSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    silence: SilenceSettings = Field(default_factory=SilenceSettings)
    outages: OutageSettings = Field(default_factory=OutageSettings)
    events: EventSettings = Field(default_factory=EventSettings)

    @model_validator(mode="before")
    @classmethod
    def _flat_names(cls, data: Any) -> Any:
        """Route flat names to their component (``fetch_lease_s`` -> ``fetcher``)."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            component = BY_ALIAS.get(key)
            if component is None or key in BY_PART:
                out[key] = value
            else:
                section = out.setdefault(component.part, {})
                if isinstance(section, dict):
                    section[key] = value
        return out

    @staticmethod
    def parts(process: str) -> tuple[str, ...]:
        return PROCESS_PARTS[process]

    def loaded(self) -> list[Component]:
        return [p for p in (getattr(self, n) for n in BY_PART) if isinstance(p, Component)]

    def replace(self, **flat: Any) -> Settings:
        """A copy with the given settings (flat names) changed, validated."""
        values: dict[str, Any] = {}
        for component in self.loaded():
            values[component.part] = component.model_dump(by_alias=True)
        for key, value in flat.items():
            part = BY_ALIAS[key].part
            values[part] = {**values.get(part, {}), key: value}
        for component in self.loaded():  # secrets come back as SecretStr objects: keep them
            values[component.part] = {
                k: (v.get_secret_value() if isinstance(v, SecretStr) else v)
                for k, v in values[component.part].items()
            }
        return Settings(**values)

    def redacted(self) -> dict[str, dict[str, Any]]:
        """The loaded settings as loggable values by component: secrets and URL
        credentials hidden, durations as numbers in their names' units."""
        return {c.part: _redacted(c) for c in self.loaded()}


def _redacted(component: Component) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in type(component).model_fields.items():
        value = getattr(component, name)
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
            value = (_redact_url(text) if "://" in text else "***") if text else ""
        elif isinstance(value, timedelta):
            value = in_unit(field, value)
        out[field.alias or name] = value
    if isinstance(component, DatabaseSettings):
        out["database_url"] = _redact_url(component.dsn)
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
