"""The README's detectors walkthrough, run with the real grpcurl against a real tracker-server
process (after the main walkthrough, whose $AUTH and $CLIENT it uses): detectors, a link,
sightings in, events, battery history and a travel time computed by the worker inside."""

from __future__ import annotations

import json
import pathlib
import subprocess
import time

import grpc
import pytest

from tests.e2e.test_all_in_one import (  # noqa: F401 (the fixture)
    BIN,
    ROOT,
    Server,
    json_documents,
    readme_walkthrough,
    run_walkthrough,
    server,
)
from tracker.v1 import detector_query_service_pb2 as dq
from tracker.v1 import detector_query_service_pb2_grpc as dq_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import setup_service_pb2_grpc

pytestmark = pytest.mark.e2e


def detectors_walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- detectors-walkthrough -->")[1].split(
        "<!-- /detectors-walkthrough -->"
    )[0]
    return block.split("```bash\n")[1].split("```")[0]


def test_readme_detectors_walkthrough_runs_with_grpcurl(server: Server) -> None:  # noqa: F811
    script = readme_walkthrough() + "\n" + detectors_walkthrough()
    docs = json_documents("\n" + run_walkthrough(server, script, timeout=180))
    [ingested] = [d for d in docs if "statusCount" in d or "status_count" in d]
    assert ingested.get("stored_count", ingested.get("storedCount")) in ("2", 2)
    [events] = [d["events"] for d in docs if "events" in d]
    assert len(events) == 2
    assert all(e["device_key"] != "AgAAAAAB" for e in events)
    [readings] = [d["readings"] for d in docs if "readings" in d]
    assert readings[0]["battery_voltage"] == 3.7
    [bins] = [d["travel_times"] for d in docs if "travel_times" in d]
    assert [round(b["estimate_s"]) for b in bins] == [120]


def test_the_traffic_command_pushes_a_road_graph_and_writes_the_truth(
    server: Server,  # noqa: F811
    tmp_path: pathlib.Path,
) -> None:
    """``tracker-traffic`` as a user runs it: detectors and links made through the API, the
    sightings pushed at a chosen rate, the ground truth written; the worker inside
    tracker-server then computes the links' travel times."""
    meta = (("authorization", f"Bearer {server.token}"),)
    with grpc.insecure_channel(f"127.0.0.1:{server.collector}") as ch:
        client = (
            setup_service_pb2_grpc.SetupServiceStub(ch)
            .CreateClient(
                s.CreateClientRequest(client=pb.Client(display_name="traffic")), metadata=meta
            )
            .client
        )
    truth = tmp_path / "truth.json"
    done = subprocess.run(
        [
            BIN / "tracker-traffic",
            "--collector", f"127.0.0.1:{server.collector}",
            "--token", server.token,
            "--client-id", client.id,
            "--detectors", "3",
            "--sources-per-destination", "1",
            "--hours", "0.25",
            "--rate", "2000",
            "--truth", str(truth),
        ],
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "detectors 3, links 3" in done.stdout
    links = json.loads(truth.read_text())
    assert len(links) == 3
    assert all(link["bins"] for link in links)
    with grpc.insecure_channel(f"127.0.0.1:{server.query}") as ch:
        query = dq_grpc.DetectorQueryServiceStub(ch)
        deadline = time.monotonic() + 60
        dest = links[0]["destination_detector_id"]
        while True:
            latest = query.GetLatestTravelTimes(
                dq.GetLatestTravelTimesRequest(destination_detector_id=dest), metadata=meta
            ).travel_times
            if latest or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert latest
    assert latest[0].used_count > 0
