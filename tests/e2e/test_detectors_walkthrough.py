"""The README's detectors walkthrough, run with the real grpcurl against a real tracker-server
process (after the main walkthrough, whose $AUTH and $CLIENT it uses): detectors, a link,
sightings in, events, battery history and a travel time computed by the worker inside."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.test_all_in_one import (  # noqa: F401 (the fixture)
    ROOT,
    Server,
    json_documents,
    readme_walkthrough,
    server,
)

pytestmark = pytest.mark.e2e


def detectors_walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- detectors-walkthrough -->")[1].split(
        "<!-- /detectors-walkthrough -->"
    )[0]
    return block.split("```bash\n")[1].split("```")[0]


def test_readme_detectors_walkthrough_runs_with_grpcurl(server: Server) -> None:  # noqa: F811
    script = readme_walkthrough() + "\n" + detectors_walkthrough()
    for default, port in (
        ("9000", server.collector),
        ("8000", server.query),
        ("5000", server.health),
    ):
        script = script.replace(f"localhost:{default}", f"localhost:{port}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    docs = json_documents("\n" + done.stdout)
    [ingested] = [d for d in docs if "statusCount" in d or "status_count" in d]
    assert ingested.get("stored_count", ingested.get("storedCount")) in ("2", 2)
    [events] = [d["events"] for d in docs if "events" in d]
    assert len(events) == 2
    assert all(e["device_key"] != "AgAAAAAB" for e in events)
    [readings] = [d["readings"] for d in docs if "readings" in d]
    assert readings[0]["battery_voltage"] == 3.7
    [bins] = [d["travel_times"] for d in docs if "travel_times" in d]
    assert [round(b["estimate_s"]) for b in bins] == [120]
