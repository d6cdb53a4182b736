"""Issue 15: our Redis keys and Lua scripts work on Redis Cluster, where a script call (and a
MULTI block) may touch keys of one hash slot only.

A redis-server of our own in cluster mode (one node holding all 16384 slots, on a free
port) runs every operation of the fetch queue, the account gate and the sign-in throttle:
the node itself refuses a call whose declared keys span slots (CROSSSLOT). Keys a script
builds itself are not checked by a node that holds every slot, so MONITOR records every
command, scripts' own included, and the test computes each key's slot (CRC16, as Redis
Cluster does): one slot per script call and per MULTI block."""

from __future__ import annotations

import asyncio
import pathlib
import shlex
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from adapters.redis.client import hash_tagged
from adapters.redis.queue import RedisAccountGate, RedisFetchQueue
from adapters.redis.throttle import RedisAttemptThrottle
from domain.scheduling import Capacity
from domain.throttling import AttemptLimit, ThrottleKey
from tests.ports import free_port

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XModem), Redis Cluster's key hash."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def slot(key: str) -> int:
    """The hash slot of ``key``: of its hash tag (the first non-empty ``{...}``) if any."""
    raw = key.encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return crc16(raw) % 16384


def test_slots_are_computed_as_redis_cluster_does() -> None:
    # the examples of the Redis Cluster specification
    assert crc16(b"123456789") == 0x31C3
    assert slot("{user1000}.following") == slot("{user1000}.followers")
    assert slot("foo{}{bar}") == crc16(b"foo{}{bar}") % 16384
    assert slot("foo{{bar}}zap") == crc16(b"{bar") % 16384
    assert hash_tagged("fetch") == "{fetch}"
    assert hash_tagged("tenant-{a}") == "tenant-{a}"
    assert hash_tagged("odd{}") == "{odd{}}"


class ClusterNode:
    """redis-server --cluster-enabled yes, holding every slot; no persistence."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root, self.port = root, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.monitor: subprocess.Popen[bytes] | None = None
        self.monitor_log = root / "monitor.log"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, timeout=10
        )
        return out.stdout.decode()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                # the bus port, else port + 10000 (beyond 65535 for a high free port)
                "--cluster-port",
                str(free_port()),
                "--cluster-config-file",
                str(self.root / "nodes.conf"),
                "--dir",
                str(self.root),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while "PONG" not in self.cli("ping"):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        self.cli("cluster", "addslotsrange", "0", "16383")
        while "cluster_state:ok" not in self.cli("cluster", "info"):
            assert time.monotonic() < deadline, "the cluster did not come up"
            time.sleep(0.1)
        with self.monitor_log.open("wb") as out:
            self.monitor = subprocess.Popen(
                ["redis-cli", "-p", str(self.port), "monitor"], stdout=out
            )
        while not self.monitor_log.read_text().startswith("OK"):
            time.sleep(0.02)

    def stop(self) -> None:
        for proc in (self.monitor, self.proc):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[ClusterNode]:
    node = ClusterNode(tmp_path)
    try:
        node.start()
        yield node
    finally:
        node.stop()


@pytest.fixture
async def client(cluster: ClusterNode) -> AsyncIterator[aioredis.Redis]:
    # one node holds every slot: a plain client meets no MOVED redirection
    r = aioredis.Redis(port=cluster.port)
    yield r
    await r.aclose()


async def test_the_node_refuses_a_script_whose_keys_span_slots(
    client: aioredis.Redis,
) -> None:
    """The control: this node does check what Redis Cluster checks."""
    with pytest.raises(redis.exceptions.ResponseError, match="same slot"):
        await client.eval("return redis.call('GET', KEYS[1])", 2, "fetch:due", "fetch:workers")
    assert await client.eval("return 1", 2, "{fetch}:due", "{fetch}:workers") == 1


def commands(log: pathlib.Path) -> list[tuple[str, list[str]]]:
    """(source, [command, args...]) of each MONITOR line; source "lua" inside scripts."""
    out = []
    for line in log.read_text().splitlines()[1:]:
        head, _, rest = line.partition("] ")
        if not rest:
            continue
        source = "lua" if head.endswith(" lua") else "client"
        out.append((source, shlex.split(rest)))
    return out


async def keys_of(client: aioredis.Redis, argv: list[str]) -> list[str]:
    if argv[0].upper() in {"EVALSHA", "EVAL"}:
        return argv[3 : 3 + int(argv[2])]
    try:
        found = await client.command_getkeys(*argv)
    except redis.exceptions.ResponseError:  # a command without keys
        return []
    return [k if isinstance(k, str) else k.decode() for k in found]


async def test_every_script_call_and_multi_block_touches_one_slot(
    cluster: ClusterNode, client: aioredis.Redis
) -> None:
    prefix = f"q{uuid.uuid4().hex[:6]}"
    queue = RedisFetchQueue(client, prefix=prefix)
    gate = RedisAccountGate(client, prefix=prefix)
    throttle = RedisAttemptThrottle(client, prefix=f"login-{prefix}")
    ids = [uuid.uuid4() for _ in range(6)]
    lease = timedelta(seconds=60)

    # every operation of the queue, the gate and the throttle
    await queue.mark_synced(NOW)
    assert await queue.add_missing([(t, NOW) for t in ids]) == 6
    assert await queue.try_lock_sync("w1", timedelta(seconds=5))
    await queue.unlock_sync("w1")
    await queue.heartbeat("w1", NOW + lease)
    await queue.heartbeat("w2", NOW + lease)
    one = await queue.claim("w1", 3, NOW, lease)
    two = await queue.claim("w2", 2, NOW, lease)
    assert len(one.claims) == 3
    assert len(two.claims) == 2
    done = [(c.tracker_id, NOW + timedelta(hours=1)) for c in one.claims]
    assert await queue.complete("w1", done) == 3
    assert await queue.entry(ids[0]) is not None
    assert len(await queue.members()) == 6
    stats = await queue.stats(NOW)
    assert (stats.queued, stats.claimed) == (4, 2)
    await queue.publish_capacity(Capacity(6, 1, 1, 4.0, 1), NOW)
    await queue.claim("w1", 10, NOW + timedelta(hours=2), lease)  # after w2's lease lapsed
    await queue.leave("w1", NOW + timedelta(hours=2))
    assert await queue.remove(ids[:2]) == 2
    assert await gate.acquire("acct", "w1", NOW, lease) == 0
    assert await gate.renew("acct", "w1", lease)
    await gate.release("acct", "w1", NOW + lease)
    limit = AttemptLimit(3, timedelta(minutes=1), timedelta(seconds=1), timedelta(minutes=1))
    keys = [ThrottleKey("acct:x", limit), ThrottleKey("addr:127.0.0.1", limit)]
    assert await throttle.attempt(keys) is None
    await throttle.succeeded(keys[:1], keys[1:])

    await asyncio.sleep(0.3)  # MONITOR's last lines
    seen = commands(cluster.monitor_log)
    units: list[tuple[str, set[int]]] = []  # (what, slots) per script call / MULTI block
    current: tuple[str, set[int]] | None = None
    for source, argv in seen:
        name = argv[0].upper()
        keys = await keys_of(client, argv)
        if source == "lua":
            assert current is not None, argv
            current[1].update(map(slot, keys))
        elif name in {"EVALSHA", "EVAL", "MULTI"}:
            current = (f"{name} {argv[1] if name != 'MULTI' else ''}", set(map(slot, keys)))
            units.append(current)
        elif name == "EXEC":
            current = None
        elif current is not None and current[0].startswith("MULTI"):
            current[1].update(map(slot, keys))
        else:
            current = None
    scripts = [u for u in units if not u[0].startswith("MULTI")]
    assert len(scripts) >= 12, [u[0] for u in units]
    assert [u for u in units if len(u[1]) > 1] == []
    # a script's own keys (a fetcher's leases, built in Lua) were seen and counted
    assert any(source == "lua" and any(":leases:" in k for k in argv[1:2]) for source, argv in seen)
