"""The all-in-one server started as a user starts it, driven by the generated stubs and by the
real grpcurl binary running the README's walkthrough exactly as written (ports changed)."""

from __future__ import annotations

import json
import pathlib
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from findmy import KeyPair
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REDIS_URL, process_env, url_for
from tests.ports import free_ports
from tracker.v1 import key_service_pb2 as k
from tracker.v1 import key_service_pb2_grpc as k_grpc
from tracker.v1 import resources_pb2 as pb
from tracker.v1 import setup_query_service_pb2 as q
from tracker.v1 import setup_query_service_pb2_grpc as q_grpc
from tracker.v1 import setup_service_pb2 as s
from tracker.v1 import setup_service_pb2_grpc as s_grpc

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent


class BearerMetadata(grpc.UnaryUnaryClientInterceptor):
    """Adds the bearer token to every unary call of a channel."""

    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        metadata = [*(details.metadata or ()), ("authorization", f"Bearer {self._token}")]
        return continuation(details._replace(metadata=metadata), request)


ADMIN_EMAIL = "e2e-admin@example.com"
ADMIN_PASSWORD = "e2e admin password, quite long"


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    collector: int
    query: int
    health: int
    log: pathlib.Path
    env: dict[str, str]
    token: str
    secrets: list[str]

    def log_text(self) -> str:
        return self.log.read_text()


# Bounds that only stop a broken process from hanging the suite; never a speed claim (a
# loaded 2-core machine can take a minute to import and wire a server).
STARTUP_BOUND_S = 180.0
STAGE_BOUND_S = 120.0


def wait_serving(port: int, timeout: float = STARTUP_BOUND_S) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"health on {port} not SERVING within {timeout}s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = f"tracker_e2e_{uuid.uuid4().hex[:10]}"
    collector, query, health, metrics = free_ports(4)
    env = {
        **process_env(),
        "TRACKER_DATABASE_URL": url_for(db),
        "TRACKER_REDIS_URL": REDIS_URL,
        "TRACKER_COLLECTOR_PORT": str(collector),
        "TRACKER_QUERY_PORT": str(query),
        "TRACKER_HEALTH_PORT": str(health),
        "TRACKER_METRICS_PORT": str(metrics),
        "TRACKER_SHUTDOWN_GRACE_S": "2",
        # every successful call's access line at INFO (default: DEBUG), for the log checks
        "TRACKER_ACCESS_LOG_SAMPLE": "1",
        "TRACKER_SHUTDOWN_DRAIN_S": "1",
    }
    subprocess.run(
        [BIN / "trackerctl", "migrate", "--create-database"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    subprocess.run(
        [BIN / "trackerctl", "user", "create-admin", "--email", ADMIN_EMAIL, "--password-stdin"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
        input=ADMIN_PASSWORD + "\n",
        text=True,
    )
    token = subprocess.run(
        [BIN / "trackerctl", "token", "mint", "--email", ADMIN_EMAIL, "--ttl-days", "1"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
        text=True,
    ).stdout.strip()
    log = tmp_path_factory.mktemp("e2e") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [BIN / "tracker-server"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    srv = Server(proc, collector, query, health, log, env, token, [ADMIN_PASSWORD, token])
    try:
        wait_serving(health)
        yield srv
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(
            ["psql", url_for("postgres"), "-qc", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'],
            capture_output=True,
        )


def test_setup_flow_with_generated_stubs(server: Server) -> None:
    bearer = BearerMetadata(server.token)
    with (
        grpc.insecure_channel(f"127.0.0.1:{server.collector}") as c_raw,
        grpc.insecure_channel(f"127.0.0.1:{server.query}") as q_raw,
    ):
        c_ch, q_ch = grpc.intercept_channel(c_raw, bearer), grpc.intercept_channel(q_raw, bearer)
        setup, query = s_grpc.SetupServiceStub(c_ch), q_grpc.SetupQueryServiceStub(q_ch)
        client = setup.CreateClient(
            s.CreateClientRequest(client=pb.Client(display_name="Stub Client"))
        ).client
        brand = setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name="Stub Brand"))
        ).brand
        start, end = pb.ProductionRun().start_time, pb.ProductionRun().end_time
        start.FromJsonString("2026-11-01T00:00:00Z")
        end.FromJsonString("2027-01-01T00:00:00Z")
        run = setup.CreateProductionRun(
            s.CreateProductionRunRequest(
                production_run=pb.ProductionRun(
                    brand_id=brand.id, display_name="Run", start_time=start, end_time=end
                )
            )
        ).production_run
        for kind in (pb.LOCATION_KIND_DELIVERY, pb.LOCATION_KIND_STORAGE):
            setup.CreateLocation(
                s.CreateLocationRequest(
                    location=pb.Location(
                        production_run_id=run.id,
                        kind=kind,
                        display_name=pb.LocationKind.Name(kind),
                        center=pb.GeoPoint(latitude=48.1, longitude=11.6),
                        radius_m=100,
                    )
                )
            )
        keys = [bytes([0x10 + n]) * 28 for n in range(3)]
        for k in keys:
            setup.CreateTracker(
                s.CreateTrackerRequest(
                    tracker=pb.Tracker(production_run_id=run.id, advertisement_key=k)
                )
            )
        trackers = query.ListTrackers(q.ListTrackersRequest(production_run_id=run.id)).trackers
        assert sorted(t.advertisement_key for t in trackers) == keys
        assert {t.client_id for t in trackers} == {client.id}
        locations = query.ListLocations(q.ListLocationsRequest(production_run_id=run.id))
        assert len(locations.locations) == 2


def readme_walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walkthrough -->")[1].split("<!-- /walkthrough -->")[0]
    match = re.search(r"```bash\n(.*?)```", block, re.S)
    assert match, "README walkthrough block missing"
    return match.group(1)


def json_documents(output: str) -> list[dict]:
    decoder, docs, i = json.JSONDecoder(), [], 0
    while (i := output.find("\n{", i)) != -1:
        doc, end = decoder.raw_decode(output, i + 1)
        docs.append(doc)
        i = end
    return docs


def run_walkthrough(server: Server, script: str, timeout: float) -> str:
    """A README block run by bash against ``server`` (its ports for the documented ones);
    its standard output, once it has succeeded."""
    for default, port in (
        ("9000", server.collector),
        ("8000", server.query),
        ("5000", server.health),
    ):
        # whole ports only: a free port like 50007 must not be rewritten again as 5000 + "7"
        script = re.sub(rf"localhost:{default}\b", f"localhost:{port}", script)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def test_readme_walkthrough_runs_line_by_line_with_grpcurl(server: Server) -> None:
    script = readme_walkthrough() + '\necho "WALKTHROUGH_TOKEN=$TOKEN"\n'
    out = run_walkthrough(server, script, timeout=120)
    token = out.rsplit("WALKTHROUGH_TOKEN=", 1)[1].strip()
    assert token.count(".") == 2, "the walkthrough logged in"
    server.secrets += [token, "correct horse battery staple"]
    for service in (
        "tracker.v1.SetupService",
        "tracker.v1.SetupQueryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ):
        assert service in out
    docs = json_documents("\n" + out)
    assert docs[0] == {"status": "SERVING"}
    # Processing (issue 6): the report pushed at the store made jacket-001 DELIVERED.
    [status] = [d["status"] for d in docs if isinstance(d.get("status"), dict)]
    assert status["status"] == "TRACKER_STATUS_DELIVERED", out[-3000:]
    [changes] = [d["changes"] for d in docs if "changes" in d]
    assert [c["status"] for c in changes] == ["TRACKER_STATUS_DELIVERED"]
    assert changes[0]["horizontal_accuracy_m"] == 12
    [points] = [d["points"] for d in docs if "points" in d]
    assert [(p["granularity"], p["report_count"]) for p in points] == [("GRANULARITY_HOURLY", 1)]
    # Exports (issue 17): the run's history as GPX, the jacket's report and its change.
    gpx = out[out.index("<?xml") : out.index("</gpx>") + len("</gpx>")]
    assert gpx.count("<trkpt ") == 1
    assert "<name>DELIVERED</name>" in gpx
    # Bulk jobs (issue 17): the re-evaluation job was streamed until it succeeded.
    jobs = [d["job"] for d in docs if "job" in d]
    assert jobs[-1]["status"] == "JOB_STATUS_SUCCEEDED", jobs
    assert jobs[-1]["succeeded_count"] == 3
    docs = [
        d for d in docs if not {"status", "changes", "points", "stored_count", "job"} & d.keys()
    ]
    locations, trackers, queue = docs[-3]["locations"], docs[-2], docs[-1]
    # The queue's counts (what is in it depends on what else ran against this Redis).
    assert set(queue) <= {
        "queued_count",
        "due_count",
        "claimed_count",
        "fetcher_count",
        "oldest_due_time",
        "capacity",
    }
    assert sorted(loc["kind"] for loc in locations) == [
        "LOCATION_KIND_DELIVERY",
        "LOCATION_KIND_STORAGE",
    ]
    assert len(trackers["trackers"]) == 2
    assert trackers["next_page_token"]
    assert {t["mac_address"] for t in trackers["trackers"]} <= {
        "EA:47:29:C7:D9:10",
        "C6:3B:43:94:B0:A6",
        "D6:03:44:2B:E3:64",
    }


def test_readme_devices_walkthrough_runs_with_grpcurl(server: Server) -> None:
    """The README's devices and firmware block, as written (ports changed)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- walkthrough-devices -->")[1].split("<!-- /walkthrough-devices -->")[0]
    match = re.search(r"```bash\n(.*?)```", block, re.S)
    assert match, "README devices walkthrough block missing"
    docs = json_documents("\n" + run_walkthrough(server, match.group(1), timeout=120))
    [derived] = [d for d in docs if "added_count" in d]
    assert derived["added_count"] == 4
    [marked] = [d for d in docs if "changed_count" in d]
    assert marked["changed_count"] == 4
    [plan] = [d["steps"] for d in docs if "steps" in d]
    assert [(s["component"], s["to_version"]) for s in plan] == [
        ("mcu", "1.4.0"),
        ("ble", "2.0.0"),
        ("mcu", "2.0.0"),
    ]
    [checkin] = [d for d in docs if "next_step" in d]
    assert checkin["next_step"]["to_version"] == "1.4.0"
    assert checkin["profile"]["secrets"] == [{"key": "wifi_password", "value": "hunter2"}]
    [rollout] = [d["rollout"] for d in docs if "rollout" in d and "next_step" not in d]
    assert rollout["state"] == "ROLLOUT_STATE_RUNNING"
    assert rollout["in_progress_count"] == 1
    server.secrets.append("hunter2")


def test_help_lists_every_option_with_its_environment_name() -> None:
    for command in ("tracker-server", "tracker-collector", "tracker-query", "tracker-health"):
        out = subprocess.run(
            [BIN / command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for env in (
            "TRACKER_DATABASE_URL",
            "TRACKER_REDIS_URL",
            "TRACKER_COLLECTOR_PORT",
            "TRACKER_HEALTH_PORT",
            "TRACKER_CONFIG",
            "TRACKER_LOG_FORMAT",
        ):
            assert env in out, (command, env)


def test_prometheus_metrics_count_the_calls(server: Server) -> None:
    port = int(server.env["TRACKER_METRICS_PORT"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert 'tracker_dependency_up{dependency="postgres"} 1.0' in text
    # the Prometheus gRPC conventions (issue 15)
    created = re.search(
        r'grpc_server_handled_total\{grpc_code="OK",grpc_method="CreateClient",'
        r'grpc_service="tracker.v1.SetupService",grpc_type="unary"\} (\d+)',
        text,
    )
    assert created is not None
    assert float(created.group(1)) >= 1
    assert "grpc_server_handling_seconds_bucket" in text
    assert "grpc_server_started_total" in text
    assert "tracker_rpc_requests_total" not in text


def test_trackerctl_keys_generate_export_allocate_import(
    server: Server, tmp_path: pathlib.Path
) -> None:
    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BIN / "trackerctl", *args],
            env=server.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    generated = ctl("keys", "generate", "--count", "3000", "--label", "e2e")
    batch = generated.stdout.strip()
    assert "3000/3000" in generated.stderr
    csv_path, keys_path = tmp_path / "batch.csv", tmp_path / "batch.keys"
    ctl("keys", "export", "--batch", batch, "--out", str(csv_path))
    ctl("keys", "export", "--batch", batch, "--format", "keys", "--out", str(keys_path))
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "mac_address,advertisement_key,hashed_advertisement_key"
    assert len(lines) == 3001
    assert [line.split(",")[1] for line in lines[1:]] == keys_path.read_text().splitlines()
    bearer = BearerMetadata(server.token)
    with grpc.insecure_channel(f"127.0.0.1:{server.collector}") as raw:
        setup = s_grpc.SetupServiceStub(grpc.intercept_channel(raw, bearer))
        client = setup.CreateClient(
            s.CreateClientRequest(client=pb.Client(display_name="K"))
        ).client
        brand = setup.CreateBrand(
            s.CreateBrandRequest(brand=pb.Brand(client_id=client.id, display_name="K"))
        ).brand
        run = pb.ProductionRun(brand_id=brand.id, display_name="K")
        run.start_time.FromJsonString("2026-01-01T00:00:00Z")
        run.end_time.FromJsonString("2027-01-01T00:00:00Z")
        run = setup.CreateProductionRun(
            s.CreateProductionRunRequest(production_run=run)
        ).production_run
    assert (
        "3000 tags allocated"
        in ctl("keys", "allocate", "--client", client.id, "--macs-file", str(csv_path)).stdout
    )
    pairs = [KeyPair.new() for _ in range(2)]
    with grpc.insecure_channel(f"127.0.0.1:{server.collector}") as raw:
        keys = k_grpc.KeyServiceStub(grpc.intercept_channel(raw, bearer))
        created = keys.ImportExternalTrackers(
            k.ImportExternalTrackersRequest(
                production_run_id=run.id, private_keys=[p.private_key_bytes for p in pairs]
            )
        )
    assert len(created.trackers) == 2
    for p in pairs:  # the SIGTERM test greps the server's log for these
        server.secrets += [p.private_key_b64, p.private_key_bytes.hex()]
    received = tmp_path / "received.txt"
    received.write_text("\n".join(line.split(",")[0] for line in lines[1:11]) + "\n")
    assert (
        "10 trackers imported"
        in ctl("keys", "import", "--run", run.id, "--macs-file", str(received)).stdout
    )


def test_production_without_its_secrets_refuses_to_start() -> None:
    env = process_env(TRACKER_ENVIRONMENT="production")
    for extra, missing in (
        ({}, "TRACKER_JWT_SIGNING_KEY"),
        ({"TRACKER_JWT_SIGNING_KEY": "x" * 40}, "TRACKER_KEK_RING"),
    ):
        done = subprocess.run(
            [BIN / "tracker-server"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        assert missing in done.stderr


def test_sigterm_drains_and_exits_cleanly(server: Server) -> None:
    """Last in this module: stops the shared server; its log holds no password or token."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=15) == 0
    lines = [json.loads(line) for line in server.log_text().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events.index("shutting down") < events.index("draining") < events.index("stopped")
    assert all(line["level"] != "error" for line in lines), lines
    text = server.log_text()
    assert len(server.secrets) >= 4
    for secret in server.secrets:
        assert secret not in text
    assert '"method": "/tracker.v1.AuthService/Login"' in text  # the log did see the calls


def test_the_demo_shows_reports_arriving_soon_after_start(tmp_path: pathlib.Path) -> None:
    """What `make run` starts: simulator, demo trackers, periodic fetches into the database.

    Behaviour, not speed: the bounds below only keep a broken demo from hanging the suite
    (generous, for a loaded 2-core CI machine); the demo fetches every second, so on a quiet
    machine reports arrive within seconds of SERVING."""
    db = f"tracker_demo_{uuid.uuid4().hex[:10]}"
    collector, query, health, metrics, sim = free_ports(5)
    env = {
        **process_env(),
        "TRACKER_DATABASE_URL": url_for(db),
        "TRACKER_REDIS_URL": REDIS_URL,
        "TRACKER_COLLECTOR_PORT": str(collector),
        "TRACKER_QUERY_PORT": str(query),
        "TRACKER_HEALTH_PORT": str(health),
        "TRACKER_METRICS_PORT": str(metrics),
        "TRACKER_DEMO": "true",
        "TRACKER_DEMO_SIMULATOR_PORT": str(sim),
        "TRACKER_DEMO_FETCH_INTERVAL_S": "1",
    }
    subprocess.run(
        [BIN / "trackerctl", "migrate", "--create-database"],
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [BIN / "tracker-server"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_serving(health, timeout=STARTUP_BOUND_S)
        deadline = time.monotonic() + STAGE_BOUND_S
        stored = 0
        while time.monotonic() < deadline and not stored:
            time.sleep(0.5)
            stored = int(
                subprocess.run(
                    ["psql", url_for(db), "-Atc", "SELECT count(*) FROM reports"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
        assert stored > 0, log.read_text()[-2000:]
        # The real fetcher did it: its metrics count the stored reports and the queue.
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5).read()
        samples = dict(
            line.rsplit(" ", 1)
            for line in text.decode().splitlines()
            if line.startswith("tracker_fetch_")
        )
        assert float(samples['tracker_fetch_reports_total{fate="stored"}']) > 0
        assert (
            float(samples['tracker_fetch_requests_total{account="demo-simulator",outcome="ok"}'])
            > 0
        )
        assert '"fetcher running"' in log.read_text()
        # Processing (issue 6): the in-process worker gives the demo trackers a status.
        statuses = ""
        while time.monotonic() < deadline + STAGE_BOUND_S and not statuses:
            statuses = subprocess.run(
                ["psql", url_for(db), "-Atc", "SELECT DISTINCT status FROM tracker_status"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            time.sleep(0.25)
        assert set(statuses) & {"IN_STORAGE", "IN_TRANSIT", "DELIVERED"}, log.read_text()[-2000:]
        # Devices (issue 18): the demo gateways check in and their rollout hands out steps.
        progress = ""
        while time.monotonic() < deadline + 2 * STAGE_BOUND_S and not progress:
            progress = subprocess.run(
                [
                    "psql",
                    url_for(db),
                    "-Atc",
                    "SELECT count(*) FROM rollout_devices WHERE state <> 'PENDING'"
                    " HAVING count(*) > 0",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            time.sleep(0.5)
        assert progress, log.read_text()[-2000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        subprocess.run(
            ["psql", url_for("postgres"), "-qc", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'],
            capture_output=True,
        )
