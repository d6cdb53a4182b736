"""Hostile input to every RPC, generated from the service descriptors (like the isolation
matrix: an RPC added later is fuzzed without editing this file).

The all-in-one server runs as its own process (collector, query and health ports). Every RPC
of every service on it (tracker.v1, health, reflection) is called, as an ADMIN and as the
CLIENT_ADMIN of another client, with requests whose fields take hostile values chosen from
the request message's descriptor (extreme integers, NaN and infinities, Timestamps at and
beyond their limits, huge and NUL-laden strings, invalid UUIDs and base64, forged page
tokens, huge repeated fields), and with raw bytes that are no message at all, as unary
calls and streams. Every call has a deadline. No answer may be INTERNAL or UNKNOWN, no call
may hang, and afterwards the servers must still be SERVING with their memory bounded, and
whatever the fuzz managed to store must not make a listing unreadable for the ADMIN.
Seeded: a failure names its case and replays with TRACKER_FUZZ_SEED=<seed> (TRACKER_FUZZ_DEBUG=1
with ``-s`` prints every call and its answer).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import pathlib
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

import grpc
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from domain.access import Principal, Role
from servers.config import Settings
from servers.container import Container
from tests.conftest import REDIS_URL, process_env
from tests.integration.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Stack, connect
from tests.integration.test_isolation_matrix import (
    SERVICES,
    World,
    add_user,
    make_world,
    request_for,
)
from tests.ports import free_ports
from tracker.v1 import job_query_service_pb2, job_query_service_pb2_grpc
from tracker.v1 import setup_query_service_pb2 as q
from usecases.access import AccessUseCases, NewUser

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("TRACKER_FUZZ_SEED", "20261202"))
VALUE_CASES = 8  # per RPC and caller: requests with hostile field values (half: one field)
VALUE_CASES_HASHING = 3  # for RPCs taking a password: each call costs an Argon2 hash (64 MiB)
DEADLINE_S = 20.0  # a call still running after this is a hang
CONCURRENCY = 4  # calls in flight at once
MAX_RSS_GROWTH_MB = 300  # generous: Argon2 alone takes 64 MiB per hash
RECEIVE_LIMIT = 16 * 1024 * 1024  # grpc.max_receive_message_length of every server
REPEATED_BYTES = 4 * 1024 * 1024  # at most this much of one repeated field per request
SIGNING_KEY = "fuzz-suite-signing-key-" + "x" * 24
BIN = pathlib.Path(sys.executable).parent

OTHER_SERVICES = [
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
]
# Streams until cancelled (or, WatchJob, until a job that may be paused finishes): read one
# answer.
ENDLESS = {
    "grpc.health.v1.Health/Watch",
    "tracker.v1.DetectorQueryService/StreamDetectorEvents",
    "tracker.v1.DetectorQueryService/StreamTravelTimes",
    "tracker.v1.JobQueryService/WatchJob",
    "tracker.v1.EventQueryService/StreamEvents",
}
FAILING = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}


# -- hostile values -------------------------------------------------------------------------

FD = descriptor.FieldDescriptor
INTS: dict[int, list[int]] = {
    FD.TYPE_INT32: [-(2**31), 2**31 - 1, -1, 0, 1],
    FD.TYPE_SINT32: [-(2**31), 2**31 - 1, -1],
    FD.TYPE_SFIXED32: [-(2**31), 2**31 - 1, -1],
    FD.TYPE_INT64: [-(2**63), 2**63 - 1, -1, 0, 2**53 + 1],
    FD.TYPE_SINT64: [-(2**63), 2**63 - 1, -1],
    FD.TYPE_SFIXED64: [-(2**63), 2**63 - 1, -1],
    FD.TYPE_UINT32: [0, 2**32 - 1, 2**31],
    FD.TYPE_FIXED32: [0, 2**32 - 1],
    FD.TYPE_UINT64: [0, 2**64 - 1, 2**63],
    FD.TYPE_FIXED64: [0, 2**64 - 1],
}
FLOATS = [math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324, 90.0000001, -180.5, 1e-7]
ENUMS = [-1, 2**31 - 1, 999, 0]
# (seconds, nanos): at, just beyond and far beyond the limits of google.protobuf.Timestamp
TIMESTAMPS = [
    *[(-62135596800, 0)] * 3,  # 0001-01-01T00:00:00Z, the first instant a Timestamp holds
    *[(253402300799, 999_999_999)] * 3,  # 9999-12-31T23:59:59.999999999Z, the last
    (0, 0),
    (-62135596801, 0),
    (253402300800, 0),
    (-(2**63), 0),
    (2**63 - 1, 0),
    (0, -1),
    (0, 1_000_000_000),
    (0, 2**31 - 1),
    (1_800_000_000, -(2**31)),
    (-86400 * 365 * 2000, 0),  # year -30
]
UUIDISH = [
    "not-a-uuid",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "00000000-0000-0000-0000-00000000000g",
    "{12345678-1234-5678-1234-567812345678}",
    "urn:uuid:12345678-1234-5678-1234-567812345678",
    "12345678123456781234567812345678",
    "12345678-1234-5678-1234-567812345678\x00",
    "12345678-1234-5678-1234-5678123456789",
    " 12345678-1234-5678-1234-567812345678 ",
]
STRINGS = [
    "",
    "\x00",
    "a\x00b\x00c",
    "\x00" * 1000,
    "x" * 100_000,
    "é" * 50_000,
    "💥" * 10_000,
    "\u202e\ufeff\uffff",
    "'; DROP TABLE clients; --",
    "%s%n%x",
    "../../etc/passwd",
    "!!!not base64===",
    "====",
    "AAAA" * 5000,
    "@",
    "a@b",
    " " * 300,
    "\\x00\r\n\t",
    "null",
    "-infinity",
    "9999-12-31T23:59:59Z",
]
BYTES = [b"", b"\x00", b"\xff" * 27, b"\xff" * 28, b"\x01" * 29, b"\x00" * 57, b"\x80" * 1_000_000]
MASK_PATHS = [["nonexistent"], ["id"], ["display_name\x00"], [""], ["a." * 500], ["x"] * 10_000]


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def forged_page_tokens(rng: random.Random, real: Sequence[str]) -> list[str]:
    """Tokens a caller might craft: the old unsigned format with an out-of-range cursor (the
    issue's INTERNAL), tokens of the signed format with a wrong MAC, real tokens of other
    listings, garbage."""
    cursor = f"{uuid.uuid4()}|0001-01-01T00:00:00+14:00|99999999999|0"
    unsigned = b64url(json.dumps({"a": cursor, "f": "0" * 16}).encode())
    tokens = [
        unsigned,
        b64url(json.dumps({"a": "not-a-uuid", "f": "0" * 16}).encode()),
        "k." + b64url(json.dumps({"a": cursor}).encode()) + "." + b64url(bytes(32)),
        b64url(rng.randbytes(200)),
        "." * 100,
        "x" * 100_000,
    ]
    tokens += list(real)
    if real:
        key_id, payload, mac = real[0].split(".")
        tokens.append(f"{key_id}.{payload}.{b64url(rng.randbytes(32))}")
        tokens.append(f"{key_id}.{b64url(json.dumps({'a': cursor}).encode())}.{mac}")
    return tokens


@dataclass
class Hostile:
    """Chooses hostile values for the fields of a request, from its descriptor."""

    rng: random.Random
    page_tokens: list[str]
    world_ids: list[str]

    def string(self, f: FD) -> str:
        name = f.name
        pool = list(STRINGS)
        if name == "id" or name.endswith(("_id", "_ids")):
            pool += UUIDISH * 2 + [str(uuid.uuid4()), *self.world_ids]
        if name == "page_token":
            pool += self.page_tokens * 3
        if "key" in name:
            pool += [b64url(self.rng.randbytes(28)), base64.b64encode(b"\xff" * 28).decode()]
        return self.rng.choice(pool)

    def scalar(self, f: FD) -> Any:
        if f.type in INTS:
            return self.rng.choice(INTS[f.type])
        if f.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
            return self.rng.choice(FLOATS)
        if f.type == FD.TYPE_BOOL:
            return True
        if f.type == FD.TYPE_ENUM:
            return self.rng.choice(ENUMS + [v.number for v in f.enum_type.values])
        if f.type == FD.TYPE_STRING:
            return self.string(f)
        if f.type == FD.TYPE_BYTES:
            return self.rng.choice([*BYTES, self.rng.randbytes(self.rng.randint(1, 64))])
        raise AssertionError(f"no hostile values for {f.full_name}")

    def count(self, item_size: int) -> int:
        """How many items a repeated field gets: none, a few, or just past any sane limit,
        within REPEATED_BYTES (messages beyond the receive limit are a case of their own)."""
        n = self.rng.choice([0, 1, 3, 1_001, 10_001])
        return min(n, max(1, REPEATED_BYTES // max(1, item_size)))

    def well_known(self, msg: Message) -> bool:
        name = msg.DESCRIPTOR.full_name
        if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            seconds, nanos = self.rng.choice(TIMESTAMPS)
            msg.seconds, msg.nanos = seconds, nanos  # type: ignore[attr-defined]
            return True
        if name == "google.protobuf.FieldMask":
            del msg.paths[:]  # type: ignore[attr-defined]
            msg.paths.extend(self.rng.choice(MASK_PATHS))  # type: ignore[attr-defined]
            return True
        return False

    def mutate(self, msg: Message, rate: float, depth: int = 0) -> None:
        """Give each field, with probability ``rate``, a hostile value (recursively)."""
        if self.well_known(msg):
            return
        for f in msg.DESCRIPTOR.fields:
            if self.rng.random() < rate:
                self.mutate_field(msg, f, rate, depth)
            elif f.message_type is not None and not f.is_repeated and msg.HasField(f.name):
                self.mutate(getattr(msg, f.name), rate, depth + 1)

    def mutate_field(self, msg: Message, f: FD, rate: float = 0.5, depth: int = 0) -> None:
        if f.message_type is not None:
            if f.is_repeated:
                items = getattr(msg, f.name)
                proto = items[0] if len(items) else items.add()
                self.mutate(proto, max(rate, 0.5), depth + 1)
                one = proto.SerializeToString()
                del items[:]
                for _ in range(self.count(len(one))):
                    items.add().MergeFromString(one)
            elif depth < 4:
                self.mutate(getattr(msg, f.name), max(rate, 0.5), depth + 1)
        elif f.is_repeated:
            values = getattr(msg, f.name)
            del values[:]
            value = self.scalar(f)
            n = self.count(len(value) if isinstance(value, str | bytes) else 8)
            values.extend([value] * n if n > 10 else [self.scalar(f) for _ in range(n)])
        else:
            setattr(msg, f.name, self.scalar(f))

    def mutate_one(self, msg: Message) -> str:
        """One field anywhere in the request gets a hostile value, the rest stays plausible:
        the request gets past the other checks to where that value is used."""
        spots: list[tuple[Message, FD, str]] = []

        def walk(m: Message, prefix: str, depth: int) -> None:
            for f in m.DESCRIPTOR.fields:
                spots.append((m, f, prefix + f.name))
                if f.message_type is None or depth >= 3:
                    continue
                if f.message_type.full_name.startswith("google.protobuf."):
                    continue
                if not f.is_repeated:
                    walk(getattr(m, f.name), f"{prefix}{f.name}.", depth + 1)
                elif len(getattr(m, f.name)):
                    walk(getattr(m, f.name)[0], f"{prefix}{f.name}[0].", depth + 1)

        walk(msg, "", 0)
        if not spots:
            return "-"
        m, f, where = self.rng.choice(spots)
        self.mutate_field(m, f)
        return where

    def raw_cases(self, method: descriptor.MethodDescriptor, plausible: bytes) -> list[bytes]:
        """Bytes that are no valid request message (or barely are)."""
        cases = [
            b"\xff\xff\xff",  # a truncated varint tag
            self.rng.randbytes(self.rng.randint(1, 200)),
            plausible[: max(1, len(plausible) // 2)],
        ]
        strings = [f for f in method.input_type.fields if f.type == FD.TYPE_STRING]
        if strings:  # proto3 strings must be UTF-8
            tag = (strings[0].number << 3) | 2
            cases.append(_varint(tag) + b"\x03\xff\xfe\xfd")
        nested = [f for f in method.input_type.fields if f.message_type is not None]
        if nested:  # a message nested far beyond protobuf's recursion limit
            tag = _varint((nested[0].number << 3) | 2)
            deep = b""
            for _ in range(300):
                deep = tag + _varint(len(deep)) + deep
            cases.append(deep)
        return cases


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -- calling any method with raw bytes ------------------------------------------------------


def path_of(method: descriptor.MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def _write_all(call: Any, messages: Sequence[bytes]) -> None:
    """Writes one message after the other, stopping where the server has already answered
    (writing on into a finished call is the client's error, not the server's answer)."""
    try:
        for message in messages:
            await call.write(message)
        await call.done_writing()
    except asyncio.InvalidStateError:
        pass


# grpc's client marks its own call INTERNAL with these details when it is still sending
# requests after the server has ended the call (`_AioCall.set_internal_error`): the server's
# status is lost on the client side, the server never said it. Seen once in two suite runs
# at load ~10 (IngestSightings, good/garbage/good). Such a call is asked again.
CLIENT_LOST_STATUS = "Internal error from Core"


async def call_raw(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, messages: Sequence[bytes]
) -> tuple[grpc.StatusCode, str]:
    """One call with already serialized request messages (several for a client stream);
    asked again (up to 3 times) where grpc's client lost the server's status."""
    for _ in range(3):
        code, details = await _call_raw_once(channel, method, messages)
        if not (
            method.client_streaming
            and code == grpc.StatusCode.INTERNAL
            and details == CLIENT_LOST_STATUS
        ):
            break
    return code, details


async def _call_raw_once(
    channel: grpc.aio.Channel, method: descriptor.MethodDescriptor, messages: Sequence[bytes]
) -> tuple[grpc.StatusCode, str]:
    path = path_of(method)
    try:
        if method.client_streaming and method.server_streaming:
            bidi = channel.stream_stream(path)(timeout=DEADLINE_S)
            for message in messages:  # one answer per request (reflection), then the next
                try:
                    await bidi.write(message)
                except asyncio.InvalidStateError:
                    break
                if await bidi.read() is grpc.aio.EOF:
                    break
            await _write_all(bidi, [])
            while await bidi.read() is not grpc.aio.EOF:
                pass
            code = await bidi.code()
            return code, await bidi.details() or ""
        if method.client_streaming:
            client_stream = channel.stream_unary(path)(timeout=DEADLINE_S)
            await _write_all(client_stream, messages)
            await client_stream
        elif method.server_streaming:
            stream = channel.unary_stream(path)(messages[0], timeout=DEADLINE_S)
            async for _ in stream:
                if path.lstrip("/") in ENDLESS:
                    stream.cancel()
                    break
        else:
            await channel.unary_unary(path)(messages[0], timeout=DEADLINE_S)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    except asyncio.CancelledError:
        return grpc.StatusCode.CANCELLED, ""
    return grpc.StatusCode.OK, ""


# -- the server under test ------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    ports: dict[str, int]
    log: pathlib.Path
    admin: Stack
    access: AccessUseCases
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


async def wait_serving(
    port: int, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(int(timeout_s / 0.2)):
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}")
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"health on port {port} not SERVING within {timeout_s}s")


@pytest.fixture
async def server(database_url: str, tmp_path: pathlib.Path) -> AsyncIterator[Server]:
    collector, query, health = free_ports(3)
    env = {
        **process_env(),
        "TRACKER_DATABASE_URL": database_url,
        "TRACKER_REDIS_URL": REDIS_URL,
        "TRACKER_COLLECTOR_PORT": str(collector),
        "TRACKER_QUERY_PORT": str(query),
        "TRACKER_HEALTH_PORT": str(health),
        "TRACKER_METRICS_PORT": "0",
        "TRACKER_JWT_SIGNING_KEY": SIGNING_KEY,
        "TRACKER_WORKER_IN_PROCESS": "false",
        "TRACKER_DEMO": "false",
        "TRACKER_LOG_LEVEL": "WARNING",
        "TRACKER_SHUTDOWN_GRACE_S": "1",
        "TRACKER_SHUTDOWN_DRAIN_S": "0.5",
        "TRACKER_HEALTH_CHECK_INTERVAL_S": "0.5",
    }
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([BIN / "tracker-server"], env=env, stdout=out, stderr=out)
    container = Container(
        settings=Settings(
            database_url=database_url, redis_url=REDIS_URL, jwt_signing_key=SIGNING_KEY
        )
    )
    await container.init_resources()  # type: ignore[misc]
    channels: list[grpc.aio.Channel] = []  # every channel the test opens, closed at the end
    try:
        await wait_serving(health, proc=proc)
        access: AccessUseCases = await container.access_usecases.async_()
        await access.create_user(
            Principal.system(), NewUser(email=ADMIN_EMAIL, password=ADMIN_PASSWORD, admin=True)
        )
        token, _ = await access.mint_service_token(
            Principal.system(), ADMIN_EMAIL, timedelta(hours=1)
        )
        ports = {"collector": collector, "query": query, "health": health}
        admin = connect(ports, token, cast(Any, None), access, channels)
        yield Server(proc, ports, log, admin, access, channels)
    finally:
        for channel in channels:
            await channel.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        await container.shutdown_resources()  # type: ignore[misc]


# -- the suite ------------------------------------------------------------------------------


@dataclass
class Outcome:
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    codes: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)

    def check(self, where: str, code: grpc.StatusCode, details: str) -> None:
        self.calls += 1
        self.codes[code.name] += 1
        if os.environ.get("TRACKER_FUZZ_DEBUG"):
            print(where, code.name, details[:150].replace("\n", " "))
        if code in FAILING:
            self.failures.append(f"{where}: {code.name} {details[:200]!r}")


def channels_for(stack: Stack, server: Server, method: descriptor.MethodDescriptor) -> list[Any]:
    service = method.containing_service.full_name
    if service.startswith("grpc."):  # on every server, the health port's included
        health = grpc.aio.insecure_channel(f"127.0.0.1:{server.ports['health']}")
        server.channels.append(health)
        return [stack.collector_channel, stack.query_channel, health]
    query = service.endswith("QueryService")
    return [stack.query_channel if query else stack.collector_channel]


def ordered(services: Sequence[descriptor.ServiceDescriptor]) -> list[descriptor.MethodDescriptor]:
    """Every method; deletions last, so the other calls still find something to work on."""
    methods = [m for s in services for m in s.methods]
    return sorted(methods, key=lambda m: m.name.startswith("Delete"))


async def real_page_tokens(admin: Stack) -> list[str]:
    """Genuine next_page_tokens of two listings (to be sent to the others)."""
    clients = await admin.query.ListClients(q.ListClientsRequest(page_size=1))
    brands = await admin.query.ListBrands(q.ListBrandsRequest(page_size=1))
    tokens = [clients.next_page_token, brands.next_page_token]
    assert all(tokens)
    return tokens


async def read_to_the_end(
    admin: Stack, method: descriptor.MethodDescriptor, **parent: str
) -> tuple[grpc.StatusCode, str]:
    """Pages through a listing without filters (but its ``parent``), as the ADMIN."""
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    channel = admin.query_channel if "Query" in method.containing_service.name else None
    assert channel is not None, method.full_name
    rpc = channel.unary_unary(
        path_of(method),
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    token = ""
    for _ in range(10_000):
        try:
            answer = await rpc(
                request_class(page_size=1000, page_token=token, **parent), timeout=DEADLINE_S
            )
        except grpc.aio.AioRpcError as err:
            return err.code(), err.details() or ""
        token = answer.next_page_token
        if not token:
            return grpc.StatusCode.OK, ""
    return grpc.StatusCode.DEADLINE_EXCEEDED, "paging did not end"


async def unreadable_listings(admin: Stack) -> list[str]:
    """Every listing the ADMIN cannot page through to its end (stored data poisoning reads)."""
    out = []
    for method in ordered(SERVICES):
        if not method.name.startswith("List"):
            continue
        if "job_id" in method.input_type.fields_by_name:  # a listing per job: every job's
            for job_id in await every_job(admin):
                code, details = await read_to_the_end(admin, method, job_id=job_id)
                if code != grpc.StatusCode.OK:
                    out.append(f"{method.full_name} {job_id}: {code.name} {details[:200]}")
            continue
        code, details = await read_to_the_end(admin, method)
        if code != grpc.StatusCode.OK:
            out.append(f"{method.full_name}: {code.name} {details[:200]}")
    return out


async def every_job(admin: Stack) -> list[str]:
    assert admin.query_channel is not None
    stub = job_query_service_pb2_grpc.JobQueryServiceStub(admin.query_channel)
    ids, token = [], ""
    while True:
        page = await stub.ListJobs(
            job_query_service_pb2.ListJobsRequest(page_size=1000, page_token=token)
        )
        ids += [j.id for j in page.jobs]
        token = page.next_page_token
        if not token:
            return ids


def cases_for(
    hostile: Hostile, method: descriptor.MethodDescriptor, target: World
) -> list[tuple[str, list[bytes]]]:
    """The requests one caller sends to one method (each a list of messages: a client
    stream sends several, or none)."""
    message_class = message_factory.GetMessageClass(method.input_type)
    if method.containing_service.full_name.startswith("tracker."):
        plausible = request_for(method, target)
    else:
        plausible = message_class()
    cases: list[tuple[str, list[bytes]]] = []
    hashing = "password" in method.input_type.fields_by_name  # an Argon2 hash per call
    for n in range(VALUE_CASES_HASHING if hashing else VALUE_CASES):
        msg = message_class()
        msg.CopyFrom(plausible)
        if n % 2 == 0:
            name = f"one field #{n} ({hostile.mutate_one(msg)})"
        else:
            hostile.mutate(msg, rate=0.25 if n % 4 == 1 else 1.0)
            name = f"values #{n}"
        cases.append((name, [msg.SerializeToString()]))  # over RECEIVE_LIMIT: RESOURCE_EXHAUSTED
    for n, raw in enumerate(hostile.raw_cases(method, plausible.SerializeToString())):
        cases.append((f"raw#{n}", [raw]))
    if method.client_streaming:
        good = plausible.SerializeToString()
        cases += [
            ("stream:empty", []),
            ("stream:good,garbage,good", [good, b"\xff\xff\xff", good]),
            ("stream:many", [good] * 20 + [cases[0][1][0]] * 3),
        ]
    return cases


@dataclass
class Call:
    where: str
    channel: grpc.aio.Channel
    method: descriptor.MethodDescriptor
    messages: list[bytes]


def calls_for(
    hostile: Hostile,
    callers: Sequence[tuple[str, Stack]],
    methods: Sequence[descriptor.MethodDescriptor],
    server: Server,
    target: World,
) -> list[Call]:
    calls = []
    for caller, stack in callers:
        for method in methods:
            cases = cases_for(hostile, method, target)
            for channel in channels_for(stack, server, method):
                for name, messages in cases:
                    if messages or method.client_streaming:
                        where = f"{caller} {path_of(method)} {name}"
                        calls.append(Call(where, channel, method, messages))
    return calls


async def run(calls: Sequence[Call], outcome: Outcome) -> None:
    """A few calls in flight at once (the server's work overlaps the client's)."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Call) -> None:
        async with slots:
            started = time.perf_counter()
            code, details = await call_raw(call.channel, call.method, call.messages)
            outcome.seconds[path_of(call.method)] += time.perf_counter() - started
            outcome.check(call.where, code, details)

    await asyncio.gather(*(one(call) for call in calls))


async def test_no_hostile_input_gives_internal_unknown_or_a_hang(server: Server) -> None:
    rng = random.Random(SEED)
    admin = server.admin
    a, b = await make_world(admin, "alpha"), await make_world(admin, "bravo")
    await add_user(admin, b, "bravo", Role.VIEWER)
    other = admin.as_token(await add_user(admin, a, "alpha", Role.CLIENT_ADMIN))
    tokens = forged_page_tokens(rng, await real_page_tokens(admin))
    hostile = Hostile(rng, tokens, list(b.ids.values()) + list(a.ids.values()))
    rss_before = rss_mb(server.proc.pid)

    outcome = Outcome()
    methods = ordered([*SERVICES, *OTHER_SERVICES])
    deletions = [m for m in methods if m.name.startswith("Delete")]
    callers = [("CLIENT_ADMIN(other client)", other), ("ADMIN", admin)]
    # Cases are drawn in a fixed order (seeded), then sent a few at a time; deletions last,
    # after checking that whatever the fuzz managed to store is still readable.
    others = calls_for(hostile, callers, [m for m in methods if m not in deletions], server, b)
    removals = calls_for(hostile, callers, deletions, server, b)
    await run(others, outcome)
    unreadable = await unreadable_listings(admin)
    await run(removals, outcome)

    # Messages beyond the receive limit, unary and streamed, on both servers.
    huge = b"\x0a" + _varint(RECEIVE_LIMIT + 1) + b"x" * (RECEIVE_LIMIT + 1)
    for method in methods:
        if method.name in ("CreateClient", "ListClients", "IngestReports", "Check"):
            for channel in channels_for(admin, server, method):
                code, details = await call_raw(channel, method, [huge])
                outcome.check(f"oversized {path_of(method)}", code, details)
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (path_of(method), code)

    assert not outcome.failures, (
        f"{len(outcome.failures)} of {outcome.calls} calls failed (seed {SEED}):\n"
        + "\n".join(outcome.failures[:60])
        + "\n--- server log ---\n"
        + server.log_tail()
    )
    print(f"fuzz: {outcome.calls} calls, seed {SEED}: {dict(outcome.codes.most_common())}")
    slowest = [(m, round(t, 2)) for m, t in outcome.seconds.most_common(5)]
    print(f"fuzz: {sum(outcome.seconds.values()):.1f} s in calls, slowest: {slowest}")
    assert outcome.calls > 1000

    # Still healthy, still answering, memory bounded.
    assert server.proc.poll() is None, server.log_tail()
    for port in server.ports.values():
        await wait_serving(port, timeout_s=10)
    assert (await admin.query.ListClients(q.ListClientsRequest())).clients
    growth = rss_mb(server.proc.pid) - rss_before
    print(f"fuzz: server RSS {rss_before:.0f} MB before, grew {growth:.0f} MB")
    assert growth < MAX_RSS_GROWTH_MB, f"server RSS grew {growth:.0f} MB"

    assert not unreadable, unreadable
