"""Configuration, typed per component: defaults < YAML file < environment < command line.

- ``components.py``: one pydantic-settings model per component (database, redis, server,
  health, logging, security, login, collector, query, status, fetch queue, Find My, fetcher,
  worker, geocoding, all-in-one); every field's alias is its flat name (YAML key,
  ``--flag``, ``TRACKER_NAME`` or the seed's environment name).
- ``settings.py``: ``Settings``, the components side by side, and ``PROCESS_PARTS``: which
  components each process loads and validates (the rest stay unloaded).
- ``sources.py``: the sources layered, ``--help``, errors naming the source of a bad value.
- ``secrets.py``: the signing key, the KEK ring and the page token keys, decoded and checked.
"""

from servers.config.base import ConfigError
from servers.config.secrets import (
    DEVELOPMENT_KEK_RING,
    DEVELOPMENT_SIGNING_KEY,
    check_secrets,
    device_keys,
    kek_ring,
    page_token_keys,
    signing_key,
)
from servers.config.settings import PROCESS_PARTS, Settings
from servers.config.sources import CONFIG_ENV, env_names, from_sources, load, parser

__all__ = [
    "CONFIG_ENV",
    "DEVELOPMENT_KEK_RING",
    "DEVELOPMENT_SIGNING_KEY",
    "PROCESS_PARTS",
    "ConfigError",
    "Settings",
    "check_secrets",
    "device_keys",
    "env_names",
    "from_sources",
    "kek_ring",
    "load",
    "page_token_keys",
    "parser",
    "signing_key",
]
