"""Where settings come from: defaults < YAML file < environment < command line.

Each source gives values by flat name; the highest source wins per setting, and each of the
process's components is validated from what won. An error names the setting and the file,
variable or flag its bad value came from. Nothing else in the code reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import yaml
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo

from servers.config.base import Component, ConfigError, FieldError, in_unit, unit_suffix
from servers.config.components import COMPONENTS
from servers.config.settings import BY_ALIAS, BY_PART, PROCESS_PARTS, Settings, Unloaded

CONFIG_ENV = "TRACKER_CONFIG"
EVERY_PART = tuple(BY_PART)


def env_names() -> dict[str, str]:
    """Flat name -> environment variable, for every setting."""
    return {
        alias: component.env_name(name)
        for component in COMPONENTS
        for alias, name in component.aliases().items()
    }


def _shown(field: FieldInfo, value: Any) -> str:
    if isinstance(value, SecretStr):
        return "set" if value.get_secret_value() else "none"
    if isinstance(value, timedelta):
        return f"{in_unit(field, value):g}{unit_suffix(field)}"
    return repr(value) if value == "" else str(value)


def _metavar(annotation: Any) -> str:
    names = {timedelta: "DURATION", int: "N", float: "NUMBER", bool: "BOOL", SecretStr: "SECRET"}
    return names.get(annotation, "TEXT")


def parser(description: str, parts: Sequence[str] = EVERY_PART) -> argparse.ArgumentParser:
    """Every setting as a flag, grouped by component, each with its environment name; the
    components not in ``parts`` (the process's) are listed as ignored by this process."""
    p = argparse.ArgumentParser(
        description=description,
        epilog="Precedence: defaults < YAML file (--config or $TRACKER_CONFIG) < environment "
        "< command line. Durations: a number in the unit the name says (_s, _h, _hours, "
        "_days), or e.g. 90s, 15m, 1h30m, 7d.",
    )
    p.add_argument("--config", metavar="FILE", help=f"YAML file of settings [env {CONFIG_ENV}]")
    for component in COMPONENTS:
        unused = "" if component.part in parts else " (not used by this process)"
        group = p.add_argument_group(f"{component.part}: {component.__doc__}{unused}")
        defaults = component()
        for alias, name in component.aliases().items():
            field = component.model_fields[name]
            help = field.description or ""
            group.add_argument(
                "--" + alias.replace("_", "-"),
                dest=alias,
                default=None,
                metavar=_metavar(field.annotation),
                help=(
                    f"{help} [env {component.env_name(name)}] "
                    f"(default: {_shown(field, getattr(defaults, name))})"
                ).replace("%", "%%"),
            )
    return p


def load(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    description: str = "Tracker Services",
    process: str = "all_in_one",
) -> Settings:
    """The settings of ``process`` from its command line and the environment."""
    parts = PROCESS_PARTS[process]
    args = parser(description, parts).parse_args(argv)
    return from_sources(vars(args), os.environ if env is None else env, parts)


def _yaml(path: str) -> dict[str, tuple[Any, str]]:
    origin = f"config file {path}"
    try:
        loaded = yaml.safe_load(pathlib.Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{origin}: expected a mapping of settings")
    values: dict[str, tuple[Any, str]] = {}
    unknown: list[str] = []
    for key, value in loaded.items():
        component = BY_PART.get(key) if isinstance(key, str) else None
        if component is not None and isinstance(value, dict):  # a section: fetcher: {lease: 1m}
            fields = {n: a for a, n in component.aliases().items()}
            for sub, sub_value in value.items():
                alias = fields.get(sub, sub)
                if alias in component.aliases():
                    values[alias] = (sub_value, origin)
                else:
                    unknown.append(f"{key}.{sub}")
        elif isinstance(key, str) and key in BY_ALIAS:
            values[key] = (value, origin)
        else:
            unknown.append(str(key))
    if unknown:
        raise ConfigError(f"{origin}: unknown settings {sorted(unknown)}")
    return values


def from_sources(
    cli: Mapping[str, Any], env: Mapping[str, str], parts: Sequence[str] = EVERY_PART
) -> Settings:
    """The settings of the components ``parts`` from parsed flags (``None``: not given), the
    environment and the YAML file either names; the other components stay unloaded."""
    values: dict[str, tuple[Any, str]] = {}
    path = cli.get("config") or env.get(CONFIG_ENV)
    if path:
        values.update(_yaml(path))
    for alias, env_name in env_names().items():
        if env_name in env:
            values[alias] = (env[env_name], f"environment {env_name}")
    for alias in BY_ALIAS:
        if cli.get(alias) is not None:
            values[alias] = (cli[alias], "--" + alias.replace("_", "-"))
    loaded: dict[str, Any] = {}
    for part, component in BY_PART.items():
        if part not in parts:
            loaded[part] = Unloaded(part)
            continue
        mine = {a: v for a, (v, _) in values.items() if BY_ALIAS[a] is component}
        origins = {a: o for a, (_, o) in values.items() if BY_ALIAS[a] is component}
        loaded[part] = _validated(component, mine, origins)
    return Settings.model_construct(**loaded)


def _validated(
    component: type[Component], values: dict[str, Any], origins: dict[str, str]
) -> Component:
    try:
        return component(**values)
    except ValidationError as exc:
        raise ConfigError(_problem(component, exc, values, origins)) from None


def _problem(
    component: type[Component],
    exc: ValidationError,
    values: dict[str, Any],
    origins: dict[str, str],
) -> str:
    """The first problem, as ``<source>: <setting> <what is wrong>, got <value>``."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        alias, problem, shown = cause.alias, cause.problem, ""
    else:
        alias = str(error["loc"][0]) if error["loc"] else component.part
        problem = error["msg"].removeprefix("Value error, ")
        problem = problem[:1].lower() + problem[1:]
        secret = alias in component.aliases() and (
            component.model_fields[component.aliases()[alias]].annotation is SecretStr
        )
        shown = "" if secret or alias not in values else f", got {values[alias]!r}"
    return f"{origins.get(alias, 'default')}: {alias} {problem}{shown}"
