"""Settings: defaults < YAML file < environment < command line, with errors naming the source."""

from __future__ import annotations

import base64
import dataclasses
import pathlib
from typing import Any

import pytest
import yaml

from servers.config import (
    CONFIG_ENV,
    ConfigError,
    Settings,
    from_sources,
    load,
    page_token_keys,
    parser,
)

# A valid value, different from the default, for every setting.
SAMPLES: dict[str, Any] = {
    "database_url": "postgresql://app@db.internal:5432/tracker",
    "redis_url": "redis://cache.internal:6379/2",
    "bind_host": "0.0.0.0",
    "collector_port": 9100,
    "query_port": 8100,
    "health_port": 0,
    "metrics_port": 9999,
    "log_level": "DEBUG",
    "log_format": "text",
    "db_pool_max": 3,
    "health_check_interval_s": 5.5,
    "health_check_timeout_s": 0.25,
    "shutdown_grace_s": 30.0,
    "shutdown_drain_s": 7.5,
    "grpc_max_connection_age_s": 120.0,
    "grpc_max_connection_age_grace_s": 15.0,
    "environment": "production",
    "jwt_signing_key": "unit-test-signing-key-of-at-least-32-bytes",
    "jwt_signing_key_file": "/run/secrets/jwt-signing-key",
    "kek_ring": "k1=" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=",
    "kek_ring_file": "/run/secrets/kek-ring",
    "page_token_keys": "p1=" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=",
    "kek_active_id": "k1",
    "findmy_account_file": "/run/secrets/findmy-account.json",
    "findmy_fetch_url": "http://127.0.0.1:8811/findmyservice/v2/fetch",
    "findmy_timeout_s": 5.0,
    "max_keys_per_batch": 32,
    "demo": True,
    "demo_simulator_port": 8812,
    "demo_fetch_interval_s": 2.5,
    "access_token_ttl_s": 60.0,
    "refresh_token_ttl_s": 3600.0,
    "anisette_server": "http://anisette.internal:6969",
    "request_interval_hours": 1.0,
    "fetch_interval_s": 2.0,
    "max_report_age_days": 3.0,
    "max_backoff_factor": 32,
    "fetch_lease_s": 60.0,
    "fetch_heartbeat_s": 2.0,
    "fetch_worker_ttl_s": 6.0,
    "fetch_queue_check_s": 30.0,
    "fetch_queue_prefix": "fetch-eu",
    "fetch_account_cooldown_max_s": 600.0,
    "db_host": "db.internal",
    "db_port": 6432,
    "db_name": "tracker_eu",
    "db_user": "fetcher",
    "db_password": "s3cret",
    "worker_batch_size": 500,
    "worker_idle_s": 0.25,
    "worker_lease_s": 30.0,
    "worker_concurrency": 3,
    "worker_in_process": False,
    "worker_retry_base_s": 7.0,
    "worker_retry_max_s": 700.0,
    "worker_metrics_interval_s": 2.5,
    "geocode_cache_size": 10,
    "geocode_cell_deg": 0.1,
    "location_history_hourly_days": 3,
    "max_message_bytes": 4 * 1024 * 1024,
    "report_max_clock_skew_s": 60.0,
    "report_partitions_back_months": 2,
    "report_partitions_ahead_months": 6,
    "report_partitions_interval_s": 600.0,
}
SAMPLES["auth_cache_ttl_s"] = 0.0
SAMPLES["ingest_tracker_cache_ttl_s"] = 0.0

SAMPLES |= {
    "login_max_failures_per_account": 3,
    "login_max_failures_per_address": 30,
    "login_window_s": 60.0,
    "login_lockout_s": 5.0,
    "login_lockout_max_s": 3600.0,
    "login_address_header": "x-forwarded-for",
    "login_trusted_proxies": "10.0.0.0/8",
    "login_throttle_prefix": "login-eu",
    "password_hash_concurrency": 1,
    "password_hash_queue": 8,
}
SAMPLES |= {  # the fetcher's account budget, windows and request filling (issue 11)
    "fetch_account_budget_per_hour": 12.0,
    "fetch_probe_max_s": 30.0,
    "fetch_overlap_h": 3.0,
    "fetch_end_grace_h": 12.0,
    "fetch_fill_horizon": 0.5,
    "findmy_busy_s": 90.0,
}
SEED_NAMES = {
    "max_keys_per_batch": "MAX_KEYS_PER_BATCH",
    "anisette_server": "ANISETTE_SERVER",
    "request_interval_hours": "REQUEST_INTERVAL_HOURS",
    "fetch_interval_s": "FETCH_INTERVAL",
    "max_report_age_days": "MAX_REPORT_AGE_DAYS",
    "db_host": "DB_HOST",
    "db_port": "DB_PORT",
    "db_name": "DB_NAME",
    "db_user": "DB_USER",
    "db_password": "DB_PASSWORD",
}
SECRETS = {f.name for f in dataclasses.fields(Settings) if f.metadata.get("secret")}
FIELDS = [f.name for f in dataclasses.fields(Settings)]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def yaml_file(tmp_path: pathlib.Path, content: Any, name: str = "tracker.yaml") -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return str(path)


def cli_args(*argv: str) -> dict[str, Any]:
    """The mapping ``load`` passes on: parsed flags, None where not given."""
    return vars(parser("test").parse_args(list(argv)))


def test_samples_cover_every_setting_and_differ_from_the_defaults() -> None:
    assert set(SAMPLES) == set(FIELDS)
    for name in FIELDS:
        assert getattr(Settings(), name) != SAMPLES[name], name


def test_no_sources_give_the_defaults() -> None:
    assert from_sources({}, {}) == Settings()
    assert from_sources(cli_args(), {}) == Settings()


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_can_come_from_each_source(tmp_path: pathlib.Path, name: str) -> None:
    value = SAMPLES[name]
    from_yaml = from_sources({"config": yaml_file(tmp_path, {name: value})}, {})
    from_env = from_sources({}, {Settings.env_name(name): str(value)})
    from_cli = from_sources(cli_args(flag(name), str(value)), {})
    for settings in (from_yaml, from_env, from_cli):
        assert getattr(settings, name) == value
        reset = {name: getattr(Settings(), name)}
        if name in DB_PARTS:  # they rewrite database_url (tested below)
            reset["database_url"] = Settings().database_url
        assert dataclasses.replace(settings, **reset) == Settings()


DB_PARTS = {"db_host", "db_port", "db_name", "db_user", "db_password"}


def test_the_seeds_db_variables_rewrite_parts_of_the_database_url() -> None:
    base = {"TRACKER_DATABASE_URL": "postgresql://app:pw@db1:5432/tracker?sslmode=require"}
    assert from_sources({}, {**base, "DB_HOST": "db2"}).database_url == (
        "postgresql://app:pw@db2:5432/tracker?sslmode=require"
    )
    every = {
        "DB_HOST": "h",
        "DB_PORT": "6432",
        "DB_NAME": "n",
        "DB_USER": "u@x",
        "DB_PASSWORD": "p/w",
    }
    assert from_sources({}, every).database_url == "postgresql://u%40x:p%2Fw@h:6432/n"
    assert "p%2Fw" not in str(from_sources({}, every).redacted())


def test_yaml_overrides_defaults_env_overrides_yaml_cli_overrides_env(
    tmp_path: pathlib.Path,
) -> None:
    path = yaml_file(tmp_path, {"collector_port": 1111, "query_port": 1111, "health_port": 1111})
    env = {"TRACKER_QUERY_PORT": "2222", "TRACKER_HEALTH_PORT": "2222"}
    settings = from_sources(cli_args("--config", path, "--health-port", "3333"), env)
    assert (settings.collector_port, settings.query_port, settings.health_port) == (
        1111,
        2222,
        3333,
    )
    assert settings.db_pool_max == Settings().db_pool_max


def test_config_file_can_be_named_by_the_environment(tmp_path: pathlib.Path) -> None:
    path = yaml_file(tmp_path, {"log_format": "text"})
    assert from_sources({}, {CONFIG_ENV: path}).log_format == "text"


def test_config_flag_wins_over_the_environment_variable(tmp_path: pathlib.Path) -> None:
    from_env = yaml_file(tmp_path, {"log_level": "ERROR"}, "env.yaml")
    from_flag = yaml_file(tmp_path, {"log_level": "WARNING"}, "flag.yaml")
    settings = from_sources(cli_args("--config", from_flag), {CONFIG_ENV: from_env})
    assert settings.log_level == "WARNING"


def test_empty_config_file_gives_the_defaults(tmp_path: pathlib.Path) -> None:
    assert from_sources({"config": yaml_file(tmp_path, "")}, {}) == Settings()


def test_unrelated_environment_variables_are_ignored() -> None:
    env = {"PATH": "/bin", "TRACKER_UNKNOWN": "x", "COLLECTOR_PORT": "1"}
    assert from_sources({}, env) == Settings()


def test_load_reads_argv_and_the_given_environment() -> None:
    settings = load(["--query-port", "8123"], {"TRACKER_COLLECTOR_PORT": "9123"})
    assert (settings.query_port, settings.collector_port) == (8123, 9123)


# -- errors ----------------------------------------------------------------------------------


def test_bad_yaml_value_names_the_file(tmp_path: pathlib.Path) -> None:
    path = yaml_file(tmp_path, {"collector_port": "ninety"})
    with pytest.raises(ConfigError, match=r"config file .*tracker\.yaml.*collector_port"):
        from_sources({"config": path}, {})


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"environment TRACKER_DB_POOL_MAX.*'many'"):
        from_sources({}, {"TRACKER_DB_POOL_MAX": "many"})


def test_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"--health-check-timeout-s.*'soon'"):
        from_sources(cli_args("--health-check-timeout-s", "soon"), {})


OUT_OF_RANGE = [
    ("collector_port", "70000"),
    ("query_port", "-1"),
    ("health_port", "65536"),
    ("log_format", "xml"),
    ("log_level", "LOUD"),
    ("db_pool_max", "0"),
    ("geocode_cell_deg", "1.5"),  # a cell's bound needs it narrower than 180 degrees
    ("geocode_cell_deg", "-0.01"),
    ("geocode_cache_size", "-1"),
    ("health_check_interval_s", "0"),
    ("health_check_timeout_s", "-1"),
    ("login_max_failures_per_account", "0"),
    ("login_window_s", "0"),
    ("login_address_header", "x forwarded"),
    ("login_trusted_proxies", "10.0.0.0/33"),
    ("password_hash_concurrency", "0"),
    ("password_hash_queue", "-1"),
]


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_out_of_range_value_is_a_config_error(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        from_sources({}, {Settings.env_name(name): value})


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_out_of_range_value_names_its_source(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"environment {Settings.env_name(name)}"):
        from_sources({}, {Settings.env_name(name): value})


def test_log_level_is_case_insensitive() -> None:
    assert from_sources({}, {"TRACKER_LOG_LEVEL": "debug"}).log_level == "debug"


def test_unknown_yaml_keys_are_rejected_by_name(tmp_path: pathlib.Path) -> None:
    path = yaml_file(tmp_path, {"collector_port": 1, "colector_port": 2, "zzz": 3})
    with pytest.raises(ConfigError, match=r"unknown settings \['colector_port', 'zzz'\]"):
        from_sources({"config": path}, {})


@pytest.mark.parametrize("content", ["- a\n- b\n", "just text\n", "42\n"])
def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: pathlib.Path, content: str) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_sources({"config": yaml_file(tmp_path, content)}, {})


def test_malformed_yaml_is_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="config file"):
        from_sources({"config": yaml_file(tmp_path, "a: [1, 2\n")}, {})


def test_missing_config_file_is_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml"):
        from_sources({}, {CONFIG_ENV: str(tmp_path / "missing.yaml")})


@pytest.mark.parametrize(
    "content",
    [
        "bind_host:\n",
        "collector_port: 9000.7\n",
        "collector_port: true\n",
        "database_url: [a, b]\n",
    ],
)
def test_yaml_value_of_the_wrong_type_is_a_config_error(
    tmp_path: pathlib.Path, content: str
) -> None:
    with pytest.raises(ConfigError, match="config file"):
        from_sources({"config": yaml_file(tmp_path, content)}, {})


def test_non_string_yaml_keys_are_a_config_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match="unknown settings"):
        from_sources({"config": yaml_file(tmp_path, "1: a\nfoo: b\n")}, {})


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_durations_are_rejected(value: str) -> None:
    with pytest.raises(ConfigError):
        from_sources({}, {"TRACKER_HEALTH_CHECK_TIMEOUT_S": value})


# -- help ------------------------------------------------------------------------------------


def test_help_lists_every_setting_with_its_flag_and_environment_name() -> None:
    text = parser("Tracker collector").format_help()
    assert "--config" in text
    assert CONFIG_ENV in text
    for name in FIELDS:
        assert flag(name) in text, name
        assert Settings.env_name(name) in text, name
        if name in SEED_NAMES:  # the names the fetch service's operators already use
            assert Settings.env_name(name) == SEED_NAMES[name]
        else:
            assert Settings.env_name(name) == "TRACKER_" + name.upper()


def test_help_states_the_precedence() -> None:
    text = " ".join(parser("x").format_help().split())
    assert "defaults < YAML file" in text
    assert "< command line" in text


# -- redaction -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/tracker", "postgresql://app:***@db:5432/tracker"),
        ("postgresql://app:p@ss:w0rd@db/tracker", "postgresql://app:***@db/tracker"),
        ("postgresql://app@db/tracker", "postgresql://app@db/tracker"),
        ("postgresql://db/tracker", "postgresql://db/tracker"),
    ],
)
def test_redacted_hides_the_database_password(url: str, shown: str) -> None:
    assert Settings(database_url=url).redacted()["database_url"] == shown


def test_redacted_hides_a_redis_password_without_user() -> None:
    shown = Settings(redis_url="redis://:t0psecret@cache:6379/0").redacted()["redis_url"]
    assert "t0psecret" not in shown
    assert shown == "redis://:***@cache:6379/0"


def test_redacted_keeps_every_other_setting() -> None:
    settings = Settings(**{k: v for k, v in SAMPLES.items() if not k.endswith("_url")})
    out = settings.redacted()
    assert set(out) == set(FIELDS)
    for name in FIELDS:
        if not name.endswith("_url") and name not in SECRETS:
            assert out[name] == SAMPLES[name]


def test_redacted_hides_the_jwt_signing_key() -> None:
    key = SAMPLES["jwt_signing_key"]
    out = Settings(jwt_signing_key=key).redacted()
    assert key not in str(out)


def test_redacted_hides_a_password_given_as_query_parameter() -> None:
    url = "postgresql://db/tracker?user=app&password=s3cret"
    assert "s3cret" not in Settings(database_url=url).redacted()["database_url"]


def test_page_token_keys_derive_from_the_signing_key_unless_set() -> None:
    a = Settings(jwt_signing_key="a" * 40)
    keys_a, active_a = page_token_keys(a)
    assert list(keys_a) == [active_a]
    assert len(keys_a[active_a]) == 32
    assert keys_a[active_a] != b"a" * 40  # derived, not the signing key itself
    assert page_token_keys(a) == (keys_a, active_a)  # the same on every replica
    keys_b, active_b = page_token_keys(Settings(jwt_signing_key="b" * 40))
    assert active_b != active_a
    assert keys_b[active_b] != keys_a[active_a]
    ring = (
        "new="
        + base64.b64encode(b"n" * 32).decode()
        + ",old="
        + base64.b64encode(b"o" * 48).decode()
    )
    assert page_token_keys(Settings(page_token_keys=ring)) == (
        {"new": b"n" * 32, "old": b"o" * 48},
        "new",
    )


@pytest.mark.parametrize(
    "ring",
    [
        "k1",
        "k1=",
        "k1=" + base64.b64encode(b"short").decode(),
        "k1=not base64!",
        "bad id=" + base64.b64encode(b"x" * 32).decode(),
    ],
)
def test_page_token_keys_must_be_ids_and_32_byte_keys(ring: str) -> None:
    with pytest.raises(ConfigError, match="page_token_keys"):
        page_token_keys(Settings(page_token_keys=ring))
