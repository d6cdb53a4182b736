"""Production refuses secrets that are missing, published or shared: the process stops at
start with a clear message and a non-zero exit, before it serves a single call."""

from __future__ import annotations

import base64
import os
import pathlib
import re
import subprocess
import sys

import pytest

from servers import collector
from servers.config import (
    DEVELOPMENT_KEK_RING,
    DEVELOPMENT_SIGNING_KEY,
    ConfigError,
    Settings,
    check_secrets,
)
from tests.conftest import process_env

STRONG_KEY = "a-production-signing-key-of-more-than-32-bytes"
KEK = base64.b64encode(bytes(range(32))).decode()
STRONG_RING = f"k1={KEK}"


def production(**kw: str) -> Settings:
    values = {"environment": "production", "jwt_signing_key": STRONG_KEY, "kek_ring": STRONG_RING}
    values.update(kw)
    return Settings(**values)


def test_distinct_strong_secrets_are_accepted_in_production() -> None:
    check_secrets(production().security)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (production(jwt_signing_key=""), "production needs a JWT signing key"),
        (production(kek_ring=""), "production needs a KEK ring"),
        (production(jwt_signing_key=DEVELOPMENT_SIGNING_KEY), "published development key"),
        (production(kek_ring=DEVELOPMENT_KEK_RING), "published development KEK"),
        # The development KEK under another id, second in the ring, is still the public one.
        (
            production(kek_ring=STRONG_RING + ",old=" + DEVELOPMENT_KEK_RING.split("=", 1)[1]),
            "'old' is the published development KEK",
        ),
        (production(jwt_signing_key="x" * 31), "at least 32 bytes"),
        (production(kek_ring="k1=" + base64.b64encode(b"s" * 16).decode()), "base64(32 bytes)"),
        (production(jwt_signing_key=KEK), "equals KEK 'k1'"),
        (
            production(
                jwt_signing_key=bytes(range(32, 64)).decode(),
                kek_ring=("k1=" + base64.b64encode(bytes(range(32, 64))).decode()),
            ),
            "equals KEK 'k1'",
        ),
    ],
    ids=[
        "no-signing-key",
        "no-kek",
        "dev-signing-key",
        "dev-kek",
        "dev-kek-under-another-id",
        "short-signing-key",
        "short-kek",
        "signing-key-is-kek-base64",
        "signing-key-is-kek-bytes",
    ],
)
def test_production_refuses_missing_known_short_or_shared_secrets(
    settings: Settings, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_secrets(settings.security)


def test_development_keeps_its_published_defaults() -> None:
    check_secrets(Settings().security)
    check_secrets(
        Settings(jwt_signing_key=DEVELOPMENT_SIGNING_KEY, kek_ring=DEVELOPMENT_KEK_RING).security
    )


def test_a_key_file_with_the_development_key_is_refused_too(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "jwt"
    path.write_text(DEVELOPMENT_SIGNING_KEY + "\n")
    with pytest.raises(ConfigError, match="published development key"):
        check_secrets(production(jwt_signing_key_file=str(path)).security)


def test_the_server_entry_point_exits_non_zero_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("TRACKER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TRACKER_ENVIRONMENT", "production")
    monkeypatch.setenv("TRACKER_JWT_SIGNING_KEY", DEVELOPMENT_SIGNING_KEY)
    monkeypatch.setenv("TRACKER_KEK_RING", STRONG_RING)
    assert collector.main([]) == 2
    assert "published development key" in capsys.readouterr().err


def test_a_real_process_stops_at_start() -> None:
    """As an operator starts it: a separate interpreter, which exits 2 before listening."""
    env = process_env(
        **{
            "TRACKER_ENVIRONMENT": "production",
            "TRACKER_JWT_SIGNING_KEY": STRONG_KEY,
            "TRACKER_KEK_RING": DEVELOPMENT_KEK_RING,
            "TRACKER_COLLECTOR_PORT": "0",
            "TRACKER_HEALTH_PORT": "0",
            "TRACKER_METRICS_PORT": "0",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", "from servers.collector import main; raise SystemExit(main())"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "configuration error" in done.stderr
    assert "published development KEK" in done.stderr
