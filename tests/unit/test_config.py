"""Settings: one typed model per component, loaded from defaults < YAML file < environment <
command line, each process only its own components, errors naming the source."""

from __future__ import annotations

import base64
import pathlib
import tempfile
from datetime import timedelta
from typing import Any

import pytest
import yaml

from servers.config import (
    CONFIG_ENV,
    PROCESS_PARTS,
    ConfigError,
    Settings,
    device_keys,
    env_names,
    from_sources,
    load,
    page_token_keys,
    parser,
)
from servers.config.components import COMPONENTS

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
    "health_max_age_s": 12.5,
    "health_process": True,
    "shutdown_grace_s": 30.0,
    "shutdown_drain_s": 7.5,
    "grpc_max_connection_age_s": 120.0,
    "grpc_max_connection_age_grace_s": 15.0,
    "environment": "production",
    "jwt_signing_key": "unit-test-signing-key-of-at-least-32-bytes",
    "jwt_signing_key_file": "jwt-signing-key",
    "kek_ring": "k1=" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=",
    "kek_ring_file": "kek-ring",
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
SAMPLES |= {  # bulk jobs (issue 17)
    "job_items_per_second": 250.0,
    "job_batch_size": 100,
    "job_lease_s": 20.0,
    "job_idle_s": 0.2,
    "job_watch_interval_s": 1.5,
    "silence_factor": 4.0,
    "silence_default_cadence_s": 7200.0,
    "silence_min_cadence_s": 600.0,
    "silence_max_cadence_s": 86400.0,
    "silence_chunk": 500,
    "silence_interval_s": 3.0,
    "outage_jump": 0.5,
    "outage_min_silent": 3,
    "outage_baseline_window_s": 7200.0,
    "outage_interval_s": 30.0,
}
SAMPLES |= {  # changes pushed (issue 17)
    "events_stream_poll_s": 0.25,
    "events_stream_heartbeat_s": 5.0,
    "webhook_timeout_s": 3.0,
    "webhook_max_attempts": 5,
    "webhook_backoff_base_s": 2.0,
    "webhook_backoff_max_s": 600.0,
    "webhook_batch": 20,
    "webhook_idle_s": 0.25,
}
SAMPLES |= {  # retention (collector maintenance)
    "retention_sightings_days": 30.0,
    "retention_detector_statuses_days": 0.0,
    "retention_events_days": 14.0,
    "retention_delivered_webhook_days": 2.0,
    "retention_chunk": 1000,
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
    "fetch_key_cache": 1000,
}
SAMPLES |= {  # detectors and travel times (issue 16)
    "device_keys": "2=" + base64.b64encode(b"d" * 32).decode(),
    "device_key_active_id": 2,
    "travel_time_bin_s": 600,
    "travel_time_pass_gap_s": 45.0,
    "travel_time_outlier_k": 2.5,
    "travel_time_lease_s": 90.0,
    "travel_time_interval_s": 10.0,
    "travel_time_redo_s": 3600.0,
    "travel_time_workers": 2,
    "detector_stream_poll_s": 1.0,
}
SAMPLES |= {  # observability and scale-out (issue 15)
    "database_read_url": "postgresql://reader:pw@replica:5432/tracker",
    "database_read_max_lag_s": 12.0,
    "database_read_fallback": "not_serving",
    "otel_exporter_otlp_endpoint": "http://otel-collector:4317",
    "otel_service_name": "tracker-edge",
    "otel_traces_sampler_arg": 0.25,
    "access_log_sample": 0.01,
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
    # OpenTelemetry's standard variables (issue 15)
    "otel_exporter_otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otel_service_name": "OTEL_SERVICE_NAME",
    "otel_traces_sampler_arg": "OTEL_TRACES_SAMPLER_ARG",
}
SEED_NAMES["db_password_file"] = "DB_PASSWORD_FILE"
# Secrets also come from files (a mounted Secret): the file wins over the value.
SECRET_FILES = {
    "jwt_signing_key_file": "file-signing-key-of-at-least-32-bytes!",
    "kek_ring_file": "f1=" + base64.b64encode(b"f" * 32).decode(),
    "page_token_keys_file": "f1=" + base64.b64encode(b"p" * 32).decode(),
    "database_url_file": "postgresql://file@db.file/tracker",
    "redis_url_file": "redis://cache.file:6379/3",
    "db_password_file": "from-a-file",
    "device_keys_file": "5=" + base64.b64encode(b"f" * 32).decode(),
    "database_read_url_file": "postgresql://reader@replica.file/tracker",
}
_SECRET_DIR = pathlib.Path(tempfile.mkdtemp(prefix="tracker-config-test-"))
for _name, _content in SECRET_FILES.items():
    (_SECRET_DIR / _name).write_text(_content + "\n")
    SAMPLES[_name] = str(_SECRET_DIR / _name)
SECRETS = {
    "database_url",
    "redis_url",
    "jwt_signing_key",
    "kek_ring",
    "page_token_keys",
    "db_password",
    "device_keys",
    "database_read_url",
}
ENV = env_names()
FIELDS = list(ENV)


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
        assert Settings(**{name: SAMPLES[name]}) != Settings(), name


def test_every_component_has_its_place_and_every_process_a_list() -> None:
    parts = {c.part for c in COMPONENTS}
    assert set(Settings.model_fields) == parts
    assert set(PROCESS_PARTS["all_in_one"]) == parts
    for process, loaded in PROCESS_PARTS.items():
        assert {"logging", "server", "health"} <= set(loaded) <= parts, process


def test_no_sources_give_the_defaults() -> None:
    assert from_sources({}, {}) == Settings()
    assert from_sources(cli_args(), {}) == Settings()


@pytest.mark.parametrize("name", FIELDS)
def test_every_setting_can_come_from_each_source(tmp_path: pathlib.Path, name: str) -> None:
    value = SAMPLES[name]
    expected = Settings(**{name: value})
    from_yaml = from_sources({"config": yaml_file(tmp_path, {name: value})}, {})
    from_env = from_sources({}, {ENV[name]: str(value)})
    from_cli = from_sources(cli_args(flag(name), str(value)), {})
    for settings in (from_yaml, from_env, from_cli):
        assert settings == expected


def test_a_yaml_file_may_group_settings_by_component(tmp_path: pathlib.Path) -> None:
    path = yaml_file(
        tmp_path,
        {"fetcher": {"lease": "2m", "fetch_heartbeat_s": 3}, "collector_port": 9100},
    )
    settings = from_sources({"config": path}, {})
    assert settings.fetcher.lease == timedelta(minutes=2)
    assert settings.fetcher.heartbeat == timedelta(seconds=3)
    assert settings.collector.port == 9100
    with pytest.raises(ConfigError, match=r"unknown settings \['fetcher.leese'\]"):
        from_sources({"config": yaml_file(tmp_path, {"fetcher": {"leese": 1}})}, {})


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "text", "attribute", "expected"),
    [
        ("TRACKER_FETCH_LEASE_S", "90", "lease", timedelta(seconds=90)),
        ("TRACKER_FETCH_LEASE_S", "2.5", "lease", timedelta(seconds=2.5)),
        ("TRACKER_FETCH_LEASE_S", "2m", "lease", timedelta(minutes=2)),
        ("TRACKER_FETCH_LEASE_S", "1h30m", "lease", timedelta(minutes=90)),
        ("TRACKER_FETCH_LEASE_S", "500ms", "lease", timedelta(milliseconds=500)),
        ("TRACKER_FETCH_LEASE_S", "PT15M", "lease", timedelta(minutes=15)),
        ("REQUEST_INTERVAL_HOURS", "0.5", "request_interval", timedelta(minutes=30)),
        ("REQUEST_INTERVAL_HOURS", "45m", "request_interval", timedelta(minutes=45)),
        ("MAX_REPORT_AGE_DAYS", "3", "max_report_age", timedelta(days=3)),
        ("TRACKER_FETCH_OVERLAP_H", "2", "overlap", timedelta(hours=2)),
    ],
)
def test_durations_count_in_their_unit_or_carry_one(
    variable: str, text: str, attribute: str, expected: timedelta
) -> None:
    settings = from_sources({}, {variable: text})
    assert getattr(settings.fetcher, attribute) == expected


@pytest.mark.parametrize("text", ["soon", "5 parsecs", "-1", "1e400", "2x"])
def test_a_bad_duration_names_its_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="environment TRACKER_FETCH_LEASE_S: fetch_lease_s"):
        from_sources({}, {"TRACKER_FETCH_LEASE_S": text})


# -- each process loads only its own components -----------------------------------------------


def test_a_bad_fetcher_setting_does_not_stop_the_query_server() -> None:
    env = {"TRACKER_FETCH_LEASE_S": "soon", "TRACKER_QUERY_PORT": "8123"}
    settings = load([], env, process="query")
    assert settings.query.port == 8123
    with pytest.raises(ConfigError, match="fetch_lease_s"):
        load([], env, process="fetcher")
    with pytest.raises(ConfigError, match="fetch_lease_s"):
        load([], env, process="all_in_one")


@pytest.mark.parametrize("process", sorted(PROCESS_PARTS))
def test_a_process_validates_exactly_its_components(process: str) -> None:
    """A bad value in each component stops exactly the processes that load it."""
    bad = {  # one out-of-range value per component
        "logging": "TRACKER_LOG_LEVEL",
        "telemetry": "TRACKER_ACCESS_LOG_SAMPLE",
        "server": "TRACKER_METRICS_PORT",
        "health": "TRACKER_HEALTH_CHECK_INTERVAL_S",
        "database": "TRACKER_DB_POOL_MAX",
        "redis": "TRACKER_REDIS_URL_FILE",
        "security": "TRACKER_ENVIRONMENT",
        "login": "TRACKER_LOGIN_WINDOW_S",
        "collector": "TRACKER_COLLECTOR_PORT",
        "query": "TRACKER_QUERY_PORT",
        "status": "TRACKER_LOCATION_HISTORY_HOURLY_DAYS",
        "fetch_queue": "TRACKER_FETCH_QUEUE_PREFIX",
        "findmy": "TRACKER_FINDMY_TIMEOUT_S",
        "fetcher": "MAX_KEYS_PER_BATCH",
        "worker": "TRACKER_WORKER_BATCH_SIZE",
        "geocoding": "TRACKER_GEOCODE_CELL_DEG",
        "all_in_one": "TRACKER_DEMO_SIMULATOR_PORT",
        "detectors": "TRACKER_TRAVEL_TIME_BIN_S",
        "jobs": "TRACKER_JOB_BATCH_SIZE",
        "silence": "TRACKER_SILENCE_FACTOR",
        "outages": "TRACKER_OUTAGE_JUMP",
        "events": "TRACKER_WEBHOOK_MAX_ATTEMPTS",
    }
    assert set(bad) == {c.part for c in COMPONENTS}
    values = {
        "TRACKER_LOG_LEVEL": "LOUD",
        "TRACKER_REDIS_URL_FILE": "/nonexistent/redis-url",
        "TRACKER_ENVIRONMENT": "staging",
        "TRACKER_FETCH_QUEUE_PREFIX": "a b",
        "TRACKER_GEOCODE_CELL_DEG": "2",
    }
    for part, variable in bad.items():
        env = {variable: values.get(variable, "-1")}
        if part in PROCESS_PARTS[process]:
            with pytest.raises(ConfigError, match=f"environment {variable}"):
                load([], env, process=process)
        else:
            settings = load([], env, process=process)
            with pytest.raises(ConfigError, match=f"does not load the {part} settings"):
                getattr(
                    getattr(settings, part),
                    next(iter(Settings.model_fields[part].annotation.model_fields)),
                )  # type: ignore[union-attr]


# -- sources ---------------------------------------------------------------------------------


def test_the_seeds_db_variables_rewrite_parts_of_the_database_url() -> None:
    base = {"TRACKER_DATABASE_URL": "postgresql://app:pw@db1:5432/tracker?sslmode=require"}
    assert from_sources({}, {**base, "DB_HOST": "db2"}).database.dsn == (
        "postgresql://app:pw@db2:5432/tracker?sslmode=require"
    )
    every = {
        "DB_HOST": "h",
        "DB_PORT": "6432",
        "DB_NAME": "n",
        "DB_USER": "u@x",
        "DB_PASSWORD": "p/w",
    }
    assert from_sources({}, every).database.dsn == "postgresql://u%40x:p%2Fw@h:6432/n"
    assert "p%2Fw" not in str(from_sources({}, every).redacted())
    assert "p/w" not in str(from_sources({}, every).redacted())


def test_yaml_overrides_defaults_env_overrides_yaml_cli_overrides_env(
    tmp_path: pathlib.Path,
) -> None:
    path = yaml_file(tmp_path, {"collector_port": 1111, "query_port": 1111, "health_port": 1111})
    env = {"TRACKER_QUERY_PORT": "2222", "TRACKER_HEALTH_PORT": "2222"}
    settings = from_sources(cli_args("--config", path, "--health-port", "3333"), env)
    assert (settings.collector.port, settings.query.port, settings.server.health_port) == (
        1111,
        2222,
        3333,
    )
    assert settings.database.pool_max == Settings().database.pool_max


def test_precedence_holds_for_seed_names_durations_and_secrets(tmp_path: pathlib.Path) -> None:
    path = yaml_file(
        tmp_path, {"fetch_interval_s": 5, "fetch_lease_s": "1m", "jwt_signing_key": "y" * 40}
    )
    env = {
        "FETCH_INTERVAL": "6",
        "TRACKER_FETCH_LEASE_S": "2m",
        "TRACKER_JWT_SIGNING_KEY": "z" * 40,
    }
    from_yaml = from_sources({"config": path}, {})
    from_env = from_sources({"config": path}, env)
    from_cli = from_sources(cli_args("--config", path, "--fetch-lease-s", "3m"), env)
    assert from_yaml.fetcher.account_interval == timedelta(seconds=5)
    assert from_env.fetcher.account_interval == timedelta(seconds=6)
    assert from_yaml.fetcher.lease == timedelta(minutes=1)
    assert from_env.fetcher.lease == timedelta(minutes=2)
    assert from_cli.fetcher.lease == timedelta(minutes=3)
    assert from_yaml.security.jwt_signing_key.get_secret_value() == "y" * 40
    assert from_env.security.jwt_signing_key.get_secret_value() == "z" * 40


def test_config_file_can_be_named_by_the_environment(tmp_path: pathlib.Path) -> None:
    path = yaml_file(tmp_path, {"log_format": "text"})
    assert from_sources({}, {CONFIG_ENV: path}).logging.format == "text"


def test_config_flag_wins_over_the_environment_variable(tmp_path: pathlib.Path) -> None:
    from_env = yaml_file(tmp_path, {"log_level": "ERROR"}, "env.yaml")
    from_flag = yaml_file(tmp_path, {"log_level": "WARNING"}, "flag.yaml")
    settings = from_sources(cli_args("--config", from_flag), {CONFIG_ENV: from_env})
    assert settings.logging.level == "WARNING"


def test_empty_config_file_gives_the_defaults(tmp_path: pathlib.Path) -> None:
    assert from_sources({"config": yaml_file(tmp_path, "")}, {}) == Settings()


def test_unrelated_environment_variables_are_ignored() -> None:
    env = {"PATH": "/bin", "TRACKER_UNKNOWN": "x", "COLLECTOR_PORT": "1"}
    assert from_sources({}, env) == Settings()


def test_load_reads_argv_and_the_given_environment() -> None:
    settings = load(["--query-port", "8123"], {"TRACKER_COLLECTOR_PORT": "9123"})
    assert (settings.query.port, settings.collector.port) == (8123, 9123)


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_are_secret_types_hidden_from_repr() -> None:
    settings = Settings(jwt_signing_key="k" * 40, db_password="s3cret", kek_ring="x=y")
    for secret in ("k" * 40, "s3cret", "x=y"):
        assert secret not in repr(settings)
        assert secret not in str(settings.model_dump())


@pytest.mark.parametrize("name", sorted(SECRET_FILES))
def test_a_secret_file_wins_over_the_value(name: str) -> None:
    secret = name.removesuffix("_file")
    settings = from_sources(cli_args(flag(secret), "from-the-flag"), {ENV[name]: SAMPLES[name]})
    component = next(c for c in settings.loaded() if name in c.aliases())
    field = component.aliases()[secret]
    assert getattr(component, field).get_secret_value() == SECRET_FILES[name]


def test_a_missing_secret_file_names_its_source(tmp_path: pathlib.Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"environment TRACKER_JWT_SIGNING_KEY_FILE: .*nope"):
        from_sources({}, {"TRACKER_JWT_SIGNING_KEY_FILE": missing})
    with pytest.raises(ConfigError, match=r"--db-password-file: db_password_file cannot be read"):
        from_sources(cli_args("--db-password-file", missing), {})


def test_a_bad_secret_is_reported_without_its_value() -> None:
    with pytest.raises(ConfigError) as caught:
        from_sources({}, {"TRACKER_LOGIN_WINDOW_S": "x", "DB_PASSWORD": "s3cret"})
    assert "s3cret" not in str(caught.value)


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


def test_a_check_across_settings_names_one_of_them() -> None:
    env = {"TRACKER_LOGIN_LOCKOUT_S": "600", "TRACKER_LOGIN_LOCKOUT_MAX_S": "60"}
    with pytest.raises(
        ConfigError, match="environment TRACKER_LOGIN_LOCKOUT_MAX_S: login_lockout_max_s must be"
    ):
        from_sources({}, env)


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
        from_sources({}, {ENV[name]: value})


@pytest.mark.parametrize(("name", "value"), OUT_OF_RANGE)
def test_out_of_range_value_names_its_source(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"environment {ENV[name]}"):
        from_sources({}, {ENV[name]: value})


def test_log_level_is_case_insensitive() -> None:
    assert from_sources({}, {"TRACKER_LOG_LEVEL": "debug"}).logging.level == "debug"


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
        assert f"[env {ENV[name]}]" in " ".join(text.split()), name
        if name in SEED_NAMES:  # the names the fetch service's operators already use
            assert ENV[name] == SEED_NAMES[name]
        else:
            assert ENV[name] == "TRACKER_" + name.upper()


def test_help_of_a_process_says_which_components_it_ignores() -> None:
    text = " ".join(parser("tracker-query", PROCESS_PARTS["query"]).format_help().split())
    assert "query: The query server:" in text
    assert "fetcher: The fetcher's schedule and its use of Apple's budget (not used by" in text
    assert flag("fetch_lease_s") in text  # still listed, with its environment name
    assert "(not used by this process)" not in " ".join(parser("x").format_help().split())


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
    assert Settings(database_url=url).redacted()["database"]["database_url"] == shown


def test_redacted_hides_a_redis_password_without_user() -> None:
    shown = Settings(redis_url="redis://:t0psecret@cache:6379/0").redacted()["redis"]["redis_url"]
    assert "t0psecret" not in shown
    assert shown == "redis://:***@cache:6379/0"


def test_redacted_keeps_every_other_setting() -> None:
    plain = {k: v for k, v in SAMPLES.items() if k not in SECRETS and k not in SECRET_FILES}
    out = Settings(**plain).redacted()
    flat = {name: value for part in out.values() for name, value in part.items()}
    assert set(flat) == set(FIELDS)
    for name, value in plain.items():
        assert flat[name] == value, name  # durations in the unit of their names


def test_redacted_hides_the_jwt_signing_key() -> None:
    key = SAMPLES["jwt_signing_key"]
    out = Settings(jwt_signing_key=key).redacted()
    assert key not in str(out)


def test_redacted_hides_a_password_given_as_query_parameter() -> None:
    url = "postgresql://db/tracker?user=app&password=s3cret"
    assert "s3cret" not in Settings(database_url=url).redacted()["database"]["database_url"]


def test_page_token_keys_derive_from_the_signing_key_unless_set() -> None:
    a = Settings(jwt_signing_key="a" * 40).security
    keys_a, active_a = page_token_keys(a)
    assert list(keys_a) == [active_a]
    assert len(keys_a[active_a]) == 32
    assert keys_a[active_a] != b"a" * 40  # derived, not the signing key itself
    assert page_token_keys(a) == (keys_a, active_a)  # the same on every replica
    keys_b, active_b = page_token_keys(Settings(jwt_signing_key="b" * 40).security)
    assert active_b != active_a
    assert keys_b[active_b] != keys_a[active_a]
    ring = (
        "new="
        + base64.b64encode(b"n" * 32).decode()
        + ",old="
        + base64.b64encode(b"o" * 48).decode()
    )
    assert page_token_keys(Settings(page_token_keys=ring).security) == (
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
        page_token_keys(Settings(page_token_keys=ring).security)


def test_device_keys_parse_rotate_and_default_to_a_derived_key() -> None:
    def keys_of(s: Settings) -> tuple[dict[int, bytes], int]:
        return device_keys(s.detectors, s.security)

    keys, active = keys_of(Settings())
    assert list(keys) == [1]
    assert active == 1
    assert len(keys[1]) == 32
    two = "3=" + base64.b64encode(b"n" * 32).decode() + ",1=" + base64.b64encode(b"o" * 32).decode()
    keys, active = keys_of(Settings(device_keys=two))
    assert (sorted(keys), active) == ([1, 3], 3)
    assert keys_of(Settings(device_keys=two, device_key_active_id=1))[1] == 1
    for bad in (
        "x=" + base64.b64encode(b"n" * 32).decode(),
        "1=" + base64.b64encode(b"short").decode(),
    ):
        with pytest.raises(ConfigError, match="device_keys"):
            keys_of(Settings(device_keys=bad))
    with pytest.raises(ConfigError, match="device_key_active_id"):
        keys_of(Settings(device_keys=two, device_key_active_id=7))
