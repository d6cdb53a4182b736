"""The limits of domain/limits.py and the time bounds of domain/instants.py are declared once;
the proto comments and the README quote them. Changing one without the others fails here."""

from __future__ import annotations

import pathlib

import pytest

from domain import idempotency, instants, limits

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto" / "tracker" / "v1"


def comments(name: str) -> str:
    lines = (PROTO / name).read_text().splitlines()
    return "\n".join(line.strip() for line in lines if line.strip().startswith("//"))


def day(t: object) -> str:
    return f"{t:%Y-%m-%dT%H:%M:%SZ}"


@pytest.mark.parametrize(
    ("proto", "quoted"),
    [
        ("report_service.proto", f"at most {limits.MAX_REPORTS_PER_MESSAGE} reports"),
        ("report_service.proto", f"at most {limits.MAX_REPORT_MONTHS_PER_MESSAGE} distinct"),
        ("report_service.proto", f"{limits.MAX_MESSAGE_BYTES // 2**20} MiB"),
        ("report_service.proto", f"not before {day(instants.REPORT_TIME_FLOOR)}"),
        (
            "report_service.proto",
            f"default {int(instants.DEFAULT_MAX_CLOCK_SKEW.total_seconds() // 60)} minutes",
        ),
        ("setup_service.proto", f"up to {limits.MAX_BATCH_TRACKERS} trackers"),
        ("setup_service.proto", f"1..{limits.MAX_BATCH_TRACKERS}"),
        ("status_query_service.proto", f"up to {limits.MAX_BATCH_STATUSES} trackers"),
        ("status_query_service.proto", f"1..{limits.MAX_BATCH_STATUSES} trackers"),
        ("status_query_service.proto", day(instants.QUERY_TIME_FLOOR)),
        ("status_query_service.proto", day(instants.TIME_CEILING)),
        ("key_service.proto", f"Number of key pairs, 1..{limits.MAX_BATCH_KEYS}"),
        ("key_service.proto", f"at most {limits.MAX_IMPORT}"),
        ("job_service.proto", f"at most {limits.MAX_JOB_FILE_BYTES} bytes"),
        ("job_service.proto", f"at most {limits.MAX_JOB_ITEMS} rows"),
        ("job_service.proto", f"1..{limits.MAX_JOB_BATCH_SIZE}"),
        ("resources.proto", f"[{day(instants.RUN_TIME_FLOOR)}, {day(instants.RUN_TIME_CEILING)}]"),
        *(
            (proto, quoted)
            for proto in ("setup_service.proto", "key_service.proto", "user_service.proto")
            for quoted in (
                f"at most {idempotency.MAX_REQUEST_ID_LENGTH} characters",
                f"within {idempotency.IDEMPOTENCY_TTL.total_seconds() / 3600:.0f} hours",
            )
        ),
        ("detector_service.proto", f"At most {limits.MAX_SIGHTINGS_PER_MESSAGE} sightings"),
        ("detector_service.proto", f"Up to {limits.MAX_SIGHTINGS_PER_MESSAGE} sightings"),
        ("detector.proto", f"not before {day(instants.REPORT_TIME_FLOOR)}"),
        ("detector_query_service.proto", f"At most {limits.MAX_STREAM_DETECTORS} detectors"),
        ("detector_query_service.proto", f"1..{limits.MAX_STREAM_DETECTORS} detectors"),
        ("detector_query_service.proto", f"Up to {limits.MAX_EVENT_DETECTORS} detectors"),
        ("detector_query_service.proto", day(instants.QUERY_TIME_FLOOR)),
        ("events.proto", f"at most {limits.MAX_WEBHOOK_URL_LENGTH} characters"),
        ("webhook_service.proto", f"at most {limits.MAX_REDELIVER_EVENTS})"),
        (
            "webhook_service.proto",
            f"at most {idempotency.MAX_REQUEST_ID_LENGTH} characters",
        ),
    ],
)
def test_the_proto_comments_quote_the_domain(proto: str, quoted: str) -> None:
    assert quoted in comments(proto)


def test_the_readme_quotes_the_domain() -> None:
    readme = (ROOT / "README.md").read_text()
    for number in (
        limits.MAX_REPORTS_PER_MESSAGE,
        limits.MAX_BATCH_TRACKERS,
        limits.MAX_BATCH_STATUSES,
        limits.MAX_IMPORT,
        limits.MAX_BATCH_KEYS,
        limits.MAX_SIGHTINGS_PER_MESSAGE,
        limits.MAX_JOB_ITEMS,
        limits.MAX_JOB_BATCH_SIZE,
        limits.MAX_TRACK_POINTS,
    ):
        assert f"{number:,}" in readme
    assert f"at most {limits.MAX_REPORT_MONTHS_PER_MESSAGE} distinct months" in readme
    assert f"default {limits.MAX_MESSAGE_BYTES // 2**20} MiB" in readme
    for bound in (instants.REPORT_TIME_FLOOR, instants.RUN_TIME_FLOOR, instants.TIME_CEILING):
        assert day(bound) in readme
