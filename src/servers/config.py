"""Configuration, in one typed object: defaults < YAML file < environment < command line.

Every option has a field here with its environment name and help text; ``--help`` of each
process lists them all. Nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

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
    log_level: str = _opt("INFO", "DEBUG, INFO, WARNING or ERROR")
    log_format: str = _opt("json", "json (one object per line) or text")
    db_pool_max: int = _opt(10, "PostgreSQL connections per process")
    health_check_interval_s: float = _opt(2.0, "seconds between dependency checks")
    health_check_timeout_s: float = _opt(1.0, "seconds a dependency check may take")
    shutdown_grace_s: float = _opt(10.0, "seconds in-flight RPCs get on shutdown")

    @staticmethod
    def env_name(name: str) -> str:
        f = Settings.__dataclass_fields__[name]
        return f.metadata.get("env") or f"TRACKER_{name.upper()}"

    def redacted(self) -> dict[str, Any]:
        """The settings as loggable values: secrets and URL credentials hidden."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = _redact_url(value) if f.metadata.get("secret") else value
        return out


def _redact_url(value: str) -> str:
    if "@" in value and "://" in value:
        scheme, rest = value.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"
    return value


class ConfigError(ValueError):
    pass


def _coerce(name: str, raw: Any, typ: type, source: str) -> Any:
    try:
        if typ is bool and isinstance(raw, str):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        return typ(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{source}: {name} must be {typ.__name__}, got {raw!r}") from None


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
            raise ConfigError(f"config file {path}: unknown settings {sorted(unknown)}")
        for name, raw in loaded.items():
            values[name] = _coerce(name, raw, types[name], f"config file {path}")
    for name, typ in types.items():
        env_name = Settings.env_name(name)
        if env_name in env:
            values[name] = _coerce(name, env[env_name], typ, f"environment {env_name}")
    for name, typ in types.items():
        if cli.get(name) is not None:
            values[name] = _coerce(name, cli[name], typ, "--" + name.replace("_", "-"))
    settings = Settings(**values)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    for name in ("collector_port", "query_port", "health_port"):
        if not 0 <= getattr(s, name) <= 65535:
            raise ConfigError(f"{name} must be within 0..65535")
    if s.log_format not in {"json", "text"}:
        raise ConfigError("log_format must be json or text")
    if s.log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ConfigError("log_level must be DEBUG, INFO, WARNING or ERROR")
    if s.db_pool_max < 1:
        raise ConfigError("db_pool_max must be >= 1")
    if s.health_check_interval_s <= 0 or s.health_check_timeout_s <= 0:
        raise ConfigError("health check interval and timeout must be > 0")
