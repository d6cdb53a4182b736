"""What every component's settings share: the model base, options, durations, checks.

A component's settings are a pydantic-settings model whose fields carry, as their alias, the
flat name every source uses: the YAML key, ``--<name>`` on the command line and
``TRACKER_<NAME>`` in the environment (or the seed's own environment name, ``env=``).
"""

from __future__ import annotations

import ipaddress
import math
import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class ConfigError(ValueError):
    """A setting is missing, malformed or out of range; the message says which and where."""


class FieldError(ValueError):
    """A problem of one setting found by a model-wide check; ``alias`` names the setting."""

    def __init__(self, alias: str, problem: str) -> None:
        super().__init__(f"{alias} {problem}")
        self.alias = alias
        self.problem = problem


def option(
    default: Any, help: str, *, alias: str, env: str | None = None, **constraints: Any
) -> Any:
    """A setting: its default, help text and flat name (``env``: an environment name other
    than ``TRACKER_<ALIAS>``, the seed's); ``constraints``: pydantic's (``ge=``, ``gt=`` ...)."""
    return Field(
        default,
        alias=alias,
        description=help,
        json_schema_extra={"env": env or f"TRACKER_{alias.upper()}"},
        **constraints,
    )


class Component(BaseSettings):
    """The settings of one component. A component never reads the environment by itself:
    ``servers/config/sources.py`` layers the sources, so that a bad value is reported with
    the file, variable or flag it came from. A secret ``x`` with a sibling ``x_file`` is read
    from that file when the file is named (the file wins)."""

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        validate_default=True,
        allow_inf_nan=False,
    )

    part: ClassVar[str]
    """The component's name: its attribute on ``Settings`` and its YAML section."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @classmethod
    def aliases(cls) -> dict[str, str]:
        """Flat name -> field name."""
        return {f.alias or name: name for name, f in cls.model_fields.items()}

    @classmethod
    def env_name(cls, field: str) -> str:
        extra = cls.model_fields[field].json_schema_extra
        assert isinstance(extra, dict)
        return str(extra["env"])

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """A YAML ``true`` is no port or duration (pydantic would take it for 1)."""
        if isinstance(data, dict):
            names = cls.aliases()
            for key, value in data.items():
                name = names.get(key, key)
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and field.annotation is not bool:
                    raise FieldError(field.alias or name, f"must not be a boolean, got {value!r}")
        return data

    @model_validator(mode="after")
    def _read_secret_files(self) -> Component:
        for name, field in type(self).model_fields.items():
            path = getattr(self, name + "_file", None) if field.annotation is SecretStr else None
            if path:
                file_alias = type(self).model_fields[name + "_file"].alias or name + "_file"
                try:
                    text = pathlib.Path(path).read_text().strip()
                except OSError as exc:
                    raise FieldError(file_alias, f"cannot be read: {exc}") from None
                object.__setattr__(self, name, SecretStr(text))
        return self


# -- durations --------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)(?:ms|s|m|h|d)")
_TERM = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")


def _duration(unit_s: float) -> Callable[[Any], Any]:
    """A bare number counts in the setting's unit (its name says which: ``_s``, ``_h``,
    ``_hours``, ``_days``); text may also carry units (``90s``, ``15m``, ``1h30m``, ``7d``,
    ``500ms``) or be ISO 8601 (``PT15M``)."""

    def parse(value: Any) -> Any:
        if isinstance(value, timedelta):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError("must be a duration")
        seconds: float
        if isinstance(value, str):
            text = value.strip().lower().replace(" ", "")
            try:
                seconds = float(text) * unit_s
            except ValueError:
                if text.startswith("p"):
                    return value  # ISO 8601, pydantic's own
                if not text or not re.fullmatch(f"(?:{_DURATION.pattern})+", text):
                    raise ValueError(
                        "must be a duration (a number, or e.g. 90s, 15m, 1h30m)"
                    ) from None
                seconds = sum(float(n) * _UNITS[u] for n, u in _TERM.findall(text))
        else:
            seconds = float(value) * unit_s
        if not math.isfinite(seconds) or abs(seconds) > 1e9 * 86400:
            raise ValueError("must be a finite duration")
        return timedelta(seconds=seconds)

    return parse


@dataclass(frozen=True)
class Unit:
    """The unit a duration setting's bare number counts in (its name says it)."""

    seconds: float
    suffix: str


Seconds = Annotated[timedelta, BeforeValidator(_duration(1.0)), Unit(1.0, "s")]
Hours = Annotated[timedelta, BeforeValidator(_duration(3600.0)), Unit(3600.0, "h")]
Days = Annotated[timedelta, BeforeValidator(_duration(86400.0)), Unit(86400.0, "d")]


def in_unit(field: FieldInfo, value: timedelta) -> float:
    """A duration as the number its setting's unit counts (hours for ``_hours``)."""
    unit = next((m for m in field.metadata if isinstance(m, Unit)), Unit(1.0, "s"))
    return value.total_seconds() / unit.seconds


def unit_suffix(field: FieldInfo) -> str:
    return next((m.suffix for m in field.metadata if isinstance(m, Unit)), "s")


POSITIVE = {"gt": timedelta(0)}
NOT_NEGATIVE = {"ge": timedelta(0)}


# -- checks -----------------------------------------------------------------------------------


def _check(problem: str, ok: Callable[[Any], bool]) -> AfterValidator:
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def one_of(*choices: str) -> AfterValidator:
    """Case-insensitive choice (the value is kept as given)."""
    return _check(f"must be one of {', '.join(choices)}", lambda v: v.lower() in choices)


def _is_networks(value: str) -> bool:
    try:
        for part in value.split(","):
            if part.strip():
                ipaddress.ip_network(part.strip(), strict=False)
    except ValueError:
        return False
    return True


Port = Annotated[int, Field(ge=0, le=65535)]
Networks = Annotated[
    str, _check("must be comma-separated networks, e.g. 10.0.0.0/8,fd00::/8", _is_networks)
]
HeaderName = Annotated[
    str,
    _check(
        "must be a metadata header name (letters, digits, '-', '_')",
        lambda v: not v or (len(v) <= 64 and v.replace("-", "").replace("_", "").isalnum()),
    ),
]
KeyPrefix = Annotated[
    str,
    _check(
        "must be 1..64 letters, digits, '-', '_' or ':'",
        lambda v: (
            bool(v)
            and len(v) <= 64
            and v.replace("-", "").replace("_", "").replace(":", "").isalnum()
        ),
    ),
]
PowerOfTwo = Annotated[
    int, _check("must be a power of two >= 1", lambda v: v >= 1 and not v & (v - 1))
]
