"""The image (Dockerfile): a dependency layer cached from the lock, a runtime stage without
build tools, every port exposed. Built and run for real where a container engine already
runs (docker or podman; the tests never start one); where none does, or the base image can
be neither found nor pulled, the image tests skip and say why, and the Dockerfile and the
lock are still checked as text.

``TRACKER_TEST_PYTHON_IMAGE`` names the base image (the Dockerfile's ``PYTHON_IMAGE``; any
image with CPython >= 3.11.5 and ``python`` on PATH) where Docker Hub is out of reach;
``TRACKER_TEST_BUILD_NETWORK=host`` builds with the host's network (an engine without a
bridge network)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REDIS_URL, create_database, drop_database, url_for
from tests.ports import free_ports

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
BUILD_TOOLS = {"grpcio-tools", "setuptools", "wheel", "pip"}


def stages() -> list[str]:
    """The Dockerfile's stages, each from its FROM line on."""
    return re.split(r"(?m)^(?=FROM )", DOCKERFILE)[1:]


def instructions(stage: str) -> list[str]:
    joined = re.sub(r"\\\n", " ", stage)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")
    ]


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_dependencies_are_installed_from_the_lock_before_the_code_is_copied() -> None:
    build = instructions(stages()[0])
    copies = [i for i in build if i.startswith("COPY")]
    assert copies[:2] == ["COPY requirements.lock ./", "COPY requirements-build.lock ./"]
    lock_install = next(i for i, line in enumerate(build) if "-r requirements.lock" in line)
    first_code = next(i for i, line in enumerate(build) if line.startswith("COPY src"))
    assert lock_install < first_code  # the layer is cached while only the code changes
    assert not any(line.startswith("COPY . .") for line in build)
    assert any("--no-deps ." in line for line in build), "the package adds no dependency"


def test_the_lock_pins_every_runtime_dependency_and_no_build_tool() -> None:
    pins = locked()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for text in project["dependencies"]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert not BUILD_TOOLS & pins.keys()
    # the generator the build stage uses is the one `make proto` uses, and no newer than the
    # grpcio the image runs (generated stubs refuse an older runtime)
    build_pins = dict(
        line.split("==")
        for line in (ROOT / "requirements-build.lock").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(build_pins) == {"grpcio-tools"}
    assert Version(build_pins["grpcio-tools"]) <= Version(pins["grpcio"])
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "lock.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr  # the lock matches the venv the tests run in


def test_the_runtime_stage_has_the_venv_only_and_exposes_every_port() -> None:
    build, runtime = stages()
    assert build.startswith("FROM ${PYTHON_IMAGE} AS build")
    lines = instructions(runtime)
    copies = [line for line in lines if line.startswith("COPY")]
    assert copies == ["COPY --from=build /opt/venv /opt/venv"]  # no sources, no tools venv
    assert "grpcio-tools" not in runtime
    assert any("uninstall -y -q pip setuptools wheel" in line for line in lines)
    [expose] = [line for line in lines if line.startswith("EXPOSE")]
    from servers.config import Settings

    defaults = Settings()
    ports = {
        defaults.collector.port,
        defaults.query.port,
        defaults.server.health_port,
        defaults.server.metrics_port,
    }
    assert set(map(int, expose.split()[1:])) == ports
    assert "USER 10001:10001" in lines


ENTRY_POINTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def engine() -> tuple[str | None, str]:
    """A container engine that already runs here (docker or podman), or why there is none."""
    reasons = []
    for tool in ("docker", "podman"):
        path = shutil.which(tool)
        if path is None:
            reasons.append(f"no {tool}")
            continue
        try:
            probed = subprocess.run([path, "info"], capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            reasons.append(f"`{tool} info` did not answer within 20 s")
            continue
        if probed.returncode != 0:
            last = (probed.stderr.strip().splitlines() or ["failed"])[-1]
            reasons.append(f"{tool} has no running engine ({last})")
            continue
        return path, ""
    return None, "; ".join(reasons)


def base_image(tool: str) -> tuple[str | None, str]:
    """The base image, found locally or pulled, or why it cannot be had."""
    base = os.environ.get("TRACKER_TEST_PYTHON_IMAGE", "python:3.11-slim")
    inspect = [tool, "image", "inspect", base]
    if subprocess.run(inspect, capture_output=True, timeout=60).returncode == 0:
        return base, ""
    try:
        pulled = subprocess.run([tool, "pull", base], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return None, f"pulling {base} took over 300 s"
    if pulled.returncode != 0:
        last = (pulled.stderr.strip().splitlines() or ["failed"])[-1]
        return None, (
            f"base image {base} is not here and cannot be pulled ({last}); set "
            "TRACKER_TEST_PYTHON_IMAGE to a local image with CPython >= 3.11.5"
        )
    return base, ""


@pytest.fixture(scope="module")
def image() -> Iterator[tuple[str, str]]:
    """(engine, tag) of the image built from this tree, removed afterwards."""
    tool, why = engine()
    if tool is None:
        pytest.skip(f"no container engine running: {why}")
    base, why = base_image(tool)
    if base is None:
        pytest.skip(why)
    tag = f"tracker-services-test:{uuid.uuid4().hex[:8]}"
    network = os.environ.get("TRACKER_TEST_BUILD_NETWORK")
    command = [tool, "build", "--build-arg", f"PYTHON_IMAGE={base}", "-t", tag]
    command += ["--network", network] if network else []
    started = time.monotonic()
    build = subprocess.run([*command, str(ROOT)], capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    print(f"image {tag} from {base} built in {time.monotonic() - started:.0f} s")
    try:
        yield tool, tag
    finally:
        subprocess.run([tool, "rmi", "-f", tag], capture_output=True, timeout=300)


def in_container(
    image: tuple[str, str], *command: str, env: dict[str, str] | None = None, name: str = ""
) -> list[str]:
    """The command line running ``command`` in the image as the chart runs it: read-only
    root filesystem, the user of the image; the host's network (PostgreSQL and Redis on
    loopback). Named: detached, kept until removed."""
    tool, tag = image
    options = ["-d", f"--name={name}"] if name else ["--rm"]
    for key, value in (env or {}).items():
        options += ["-e", f"{key}={value}"]
    return [tool, "run", "--read-only", "--network", "host", *options, tag, *command]


def test_the_image_runs_without_build_tools(image: tuple[str, str]) -> None:
    probe = (
        "import importlib.util as u, servers.worker, tracker.v1;"
        "print([m for m in ('grpc_tools', 'setuptools', 'pip') if u.find_spec(m)])"
    )
    ran = subprocess.run(
        in_container(image, "python", "-c", probe), capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "[]"


def test_every_entry_point_of_the_image_starts(image: tuple[str, str]) -> None:
    script = "; ".join(f"{name} --help > /dev/null || echo {name}" for name in ENTRY_POINTS)
    ran = subprocess.run(
        in_container(image, "sh", "-c", script), capture_output=True, text=True, timeout=300
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == []  # the entry points that failed


def health(port: int, service: str = "") -> int | None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError:
            return None
    return int(reply.status)


def test_the_image_migrates_a_database_and_serves_queries_and_health(
    image: tuple[str, str],
) -> None:
    """The chart's hook (`trackerctl migrate`), then a query server SERVING against the
    local PostgreSQL and Redis, stopped by SIGTERM with exit code 0."""
    database = f"tracker_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(create_database(database))
    query_port, health_port = free_ports(2)
    env = {
        "TRACKER_DATABASE_URL": url_for(database),
        "TRACKER_REDIS_URL": REDIS_URL,
        "TRACKER_BIND_HOST": "127.0.0.1",
        "TRACKER_QUERY_PORT": str(query_port),
        "TRACKER_HEALTH_PORT": str(health_port),
        "TRACKER_METRICS_PORT": "0",
        "TRACKER_SHUTDOWN_DRAIN_S": "0",
        "TRACKER_HEALTH_PROCESS": "true",  # as the chart runs it
    }
    tool = image[0]
    name = f"tracker-test-{uuid.uuid4().hex[:8]}"
    try:
        migrated = subprocess.run(
            in_container(image, "trackerctl", "migrate", env=env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrated.returncode == 0, migrated.stderr
        assert "migrations applied" in migrated.stdout
        started = subprocess.run(
            in_container(image, "tracker-query", env=env, name=name),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, started.stderr
        deadline = time.monotonic() + 60
        while health(health_port) != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, subprocess.run(
                [tool, "logs", name], capture_output=True, text=True
            ).stderr[-3000:]
            time.sleep(0.5)
        assert health(query_port, "tracker.v1.StatusQueryService") == (
            health_pb2.HealthCheckResponse.SERVING
        )
        stopped = subprocess.run(
            [tool, "stop", "-t", "30", name], capture_output=True, text=True, timeout=60
        )
        assert stopped.returncode == 0, stopped.stderr
        code = subprocess.run(
            [tool, "inspect", name, "--format", "{{.State.ExitCode}}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert code.stdout.strip() == "0"
    finally:
        subprocess.run([tool, "rm", "-f", name], capture_output=True, timeout=60)
        asyncio.run(drop_database(database))
