"""The image (Dockerfile): a dependency layer cached from the lock, a runtime stage without
build tools, every port exposed. Built for real where a builder works (docker, podman or
buildah); where none does, the build test skips and says why, and the Dockerfile and the
lock are still checked as text."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys
import tomllib
import uuid

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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
    assert copies[0] == "COPY requirements.lock ./", copies
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


def builder() -> tuple[list[str] | None, str]:
    """A working image builder, or why there is none."""
    reasons = []
    for tool, probe in (("docker", ["info"]), ("podman", ["info"]), ("buildah", ["version"])):
        path = shutil.which(tool)
        if path is None:
            reasons.append(f"no {tool}")
            continue
        probed = subprocess.run([path, *probe], capture_output=True, text=True, timeout=60)
        if probed.returncode != 0:
            last = (probed.stderr.strip().splitlines() or ["failed"])[-1]
            reasons.append(f"{tool} does not work here ({last})")
            continue
        return ([path, "build"] if tool != "buildah" else [path, "bud"]), ""
    return None, "; ".join(reasons)


def test_the_image_builds_and_runs_without_build_tools() -> None:
    command, why = builder()
    if command is None:
        pytest.skip(f"no image builder available: {why}")
    tag = f"tracker-services-test:{uuid.uuid4().hex[:8]}"
    build = subprocess.run(
        [*command, "-t", tag, str(ROOT)], capture_output=True, text=True, timeout=1800
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    runner = command[0] if not command[0].endswith("buildah") else shutil.which("podman")
    if runner is None:
        return
    try:
        run = subprocess.run(
            [
                runner,
                "run",
                "--rm",
                tag,
                "python",
                "-c",
                "import importlib.util as u, servers.worker, tracker.v1;"
                "print([m for m in ('grpc_tools', 'setuptools', 'pip') if u.find_spec(m)])",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "[]"
    finally:
        subprocess.run([runner, "rmi", "-f", tag], capture_output=True, timeout=300)
