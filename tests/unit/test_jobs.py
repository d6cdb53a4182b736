"""Bulk jobs: reading a manufacturing file (pure rules), and the use cases over the fakes:
who may start and control a job, what the worker's turn does with a paused or cancelled
job, failures kept with reasons, re-runs of retryable failures only."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.access import Principal, Role
from domain.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from domain.jobs import (
    JobItem,
    JobKind,
    JobStage,
    JobStatus,
    batches,
    private_key_bytes,
    read_file,
    throttle_pause,
)
from domain.limits import MAX_JOB_FILE_BYTES
from domain.pagination import PageRequest
from servers.parts import job_usecases
from tests.unit.fakes.common import FakeUnitOfWorkFactory
from tests.unit.fakes.keys import FakeKeyPairFactory, FakeSealer
from tests.unit.test_key_usecases import ADMIN, World, make_world
from usecases.jobs import JobDefaults, JobUseCases, RunJobBatch, StartJobRequest

# -- reading a file --------------------------------------------------------------------------


def test_a_header_names_the_column_and_macs_are_made_canonical() -> None:
    data = (
        b"serial,mac_address\n1,aa-bb-cc-dd-ee-01\n\n2,AABBCCDDEE02\n3,nope\n4,aa:bb:cc:dd:ee:01\n"
    )
    parsed = read_file(data, "mac_address")
    assert parsed.items == [JobItem(2, "AA:BB:CC:DD:EE:01"), JobItem(4, "AA:BB:CC:DD:EE:02")]
    assert [(f.line, f.retryable) for f in parsed.rejected] == [(5, False), (6, False)]
    assert "not a MAC address" in parsed.rejected[0].reason
    assert parsed.rejected[1].reason == "repeats line 2"


def test_without_a_header_the_first_column_is_read() -> None:
    parsed = read_file(b"AA:BB:CC:DD:EE:01,x\r\nAA:BB:CC:DD:EE:02\r\n", "mac_address")
    assert [i.label for i in parsed.items] == ["AA:BB:CC:DD:EE:01", "AA:BB:CC:DD:EE:02"]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"mac_address\n", "no rows"),
        (b"\xff\xfe\x00", "UTF-8"),
        (b"a\x00b\n", "NUL"),
        (b"x" * (MAX_JOB_FILE_BYTES + 1), "at most"),
    ],
)
def test_a_file_that_is_no_csv_of_items_is_refused_naming_the_field(
    data: bytes, reason: str
) -> None:
    with pytest.raises(InvalidArgument) as err:
        read_file(data, "mac_address")
    assert err.value.violations[0].field == "file"
    assert reason in err.value.violations[0].reason


def test_private_keys_are_read_as_hex_or_base64() -> None:
    raw = bytes(range(28))
    assert private_key_bytes(raw.hex()) == raw
    assert private_key_bytes(base64.b64encode(raw).decode()) == raw
    with pytest.raises(InvalidArgument):
        private_key_bytes("zz" * 28 + "!")


@given(st.integers(0, 300), st.integers(1, 50))
def test_batches_cover_every_item_once_in_order(n: int, size: int) -> None:
    items = [JobItem(i, str(i)) for i in range(n)]
    cut = batches(items, size, first=3)
    assert [i for _, b in cut for i in b] == items
    assert [seq for seq, _ in cut] == list(range(3, 3 + len(cut)))
    assert all(1 <= len(b) <= size for _, b in cut)


def test_the_throttle_pause_is_items_over_rate() -> None:
    assert throttle_pause(500, 250.0) == timedelta(seconds=2)


# -- use cases over the fakes ----------------------------------------------------------------


class Jobs:
    def __init__(self, w: World) -> None:
        self.w = w
        self.uc: JobUseCases = job_usecases(
            w.uow, w.factory, w.sealer, w.clock, JobDefaults(items_per_second=1e6, batch_size=4)
        )
        self.run = RunJobBatch(w.uow, w.clock, timedelta(seconds=30))

    async def drain(self) -> int:
        applied = 0
        for _ in range(1000):
            self.w.clock.advance(timedelta(seconds=1))
            result = await self.run()
            if result.job_id is None:
                return applied
            applied += result.applied
        raise AssertionError("never ran dry")


@pytest.fixture
async def j() -> Jobs:
    return Jobs(await make_world())


def csv(rows: list[str]) -> bytes:
    return ("mac_address\n" + "\n".join(rows) + "\n").encode()


async def member(w: World, role: Role) -> Principal:
    return Principal(uuid.uuid4(), memberships={w.a.id: role})


async def test_an_import_applies_every_batch_once_and_keeps_failures(j: Jobs) -> None:
    w = j.w
    macs = await w.allocated(w.a, 9)
    _, stray = await w.batch(2)
    job = await j.uc.start_job(
        ADMIN,
        StartJobRequest(JobKind.IMPORT_TRACKERS, w.run_a.id, csv([*macs, *stray, "bad"])),
    )
    assert (job.total_items, job.batches_total, job.failed_items) == (12, 3, 1)
    assert await j.drain() == 3
    done = await j.uc.queries.get(ADMIN, job.id)
    assert (done.status, done.succeeded_items, done.failed_items) == (JobStatus.SUCCEEDED, 9, 3)
    trackers = [t for t in w.uow.committed.trackers.values() if t.production_run_id == w.run_a.id]
    assert sorted(t.mac_address.value for t in trackers) == sorted(macs)

    await w.uc.allocate_tags(ADMIN, w.a.id, stray)
    again = await j.uc.retry_job(ADMIN, job.id)
    assert (again.stage, again.pending_items) == (JobStage.RETRYING, 2)
    await j.drain()
    final = await j.uc.queries.get(ADMIN, job.id)
    assert (final.succeeded_items, final.failed_items, final.retries) == (11, 1, 1)
    fails = await j.uc.queries.failures(ADMIN, job.id, PageRequest())
    assert [f.label for f in fails.items] == ["bad"]


async def test_who_may_start_and_control_a_job(j: Jobs) -> None:
    w = j.w
    macs = await w.allocated(w.a, 2)
    request = StartJobRequest(JobKind.IMPORT_TRACKERS, w.run_a.id, csv(macs))
    viewer, admin_of_a = await member(w, Role.VIEWER), await member(w, Role.CLIENT_ADMIN)
    stranger = Principal(uuid.uuid4(), memberships={w.b.id: Role.CLIENT_ADMIN})
    with pytest.raises(PermissionDenied):
        await j.uc.start_job(viewer, request)
    with pytest.raises(NotFound):
        await j.uc.start_job(stranger, request)
    job = await j.uc.start_job(admin_of_a, request)
    assert (await j.uc.queries.get(viewer, job.id)).id == job.id
    with pytest.raises(NotFound):
        await j.uc.queries.get(stranger, job.id)
    with pytest.raises(NotFound):
        await j.uc.pause_job(stranger, job.id)
    with pytest.raises(PermissionDenied):
        await j.uc.cancel_job(viewer, job.id)
    assert (await j.uc.queries.list(stranger, None, PageRequest())).items == []
    assert (await j.uc.queries.list(stranger, w.a.id, PageRequest())).items == []
    with pytest.raises(PermissionDenied):  # allocation is the administrators'
        await j.uc.start_job(admin_of_a, StartJobRequest(JobKind.ALLOCATE_TAGS, w.a.id, csv(macs)))
    with pytest.raises(InvalidArgument) as err:
        await j.uc.start_job(ADMIN, StartJobRequest(JobKind.REEVALUATE_RUN, w.run_a.id, b"x"))
    assert err.value.violations[0].field == "file"


class Interleaved:
    """A unit-of-work factory that runs ``hook`` (another caller's action) just before the
    ``at``-th unit of work opens: the worker's turn is claim (1st), then apply (2nd)."""

    def __init__(
        self, inner: FakeUnitOfWorkFactory, at: int, hook: Callable[[], Awaitable[object]]
    ):
        self._inner, self._at, self._hook, self._n = inner, at, hook, 0

    def __call__(self) -> Any:
        self._n += 1
        uow, hook = self._inner(), self._hook if self._n == self._at else None

        class Opened:
            async def __aenter__(self) -> Any:
                if hook is not None:
                    await hook()
                return await uow.__aenter__()

            async def __aexit__(self, *exc: Any) -> None:
                await uow.__aexit__(*exc)

        return Opened()


async def test_a_batch_claimed_before_a_pause_is_given_back_and_one_before_a_cancel_dropped(
    j: Jobs,
) -> None:
    w = j.w
    macs = await w.allocated(w.a, 8)
    job = await j.uc.start_job(
        ADMIN, StartJobRequest(JobKind.IMPORT_TRACKERS, w.run_a.id, csv(macs))
    )
    w.clock.advance()
    paused_between = RunJobBatch(
        Interleaved(w.uow, 2, lambda: j.uc.pause_job(ADMIN, job.id)),  # type: ignore[arg-type]
        w.clock,
        timedelta(seconds=30),
    )
    result = await paused_between()
    assert (result.job_id, result.seq, result.applied) == (job.id, 1, False)
    paused = await j.uc.queries.get(ADMIN, job.id)
    assert (paused.status, paused.pending_items, paused.batches_running) == (
        JobStatus.PAUSED,
        8,
        0,
    )
    assert await j.drain() == 0  # nothing is taken while paused
    with pytest.raises(FailedPrecondition):
        await j.uc.pause_job(ADMIN, job.id)
    await j.uc.resume_job(ADMIN, job.id)
    w.clock.advance()
    assert (await j.run()).seq == 1  # batch 1 again, at once: it was given back
    w.clock.advance()
    cancelled_between = RunJobBatch(
        Interleaved(w.uow, 2, lambda: j.uc.cancel_job(ADMIN, job.id)),  # type: ignore[arg-type]
        w.clock,
        timedelta(seconds=30),
    )
    assert not (await cancelled_between()).applied
    cancelled = await j.uc.queries.get(ADMIN, job.id)
    assert (cancelled.status, cancelled.succeeded_items, cancelled.cancelled_items) == (
        JobStatus.CANCELLED,
        4,
        4,
    )
    assert await j.drain() == 0
    with pytest.raises(FailedPrecondition):
        await j.uc.retry_job(ADMIN, job.id)


async def test_external_keys_are_sealed_when_read_and_never_kept_in_the_clear(j: Jobs) -> None:
    w = j.w
    privates = [FakeKeyPairFactory.private_key(n) for n in range(1000, 1005)]
    rows = [p.hex() for p in privates] + [bytes(28).hex(), privates[0].hex()]
    job = await j.uc.start_job(
        ADMIN,
        StartJobRequest(
            JobKind.IMPORT_EXTERNAL_TRACKERS,
            w.run_a.id,
            ("private_key\n" + "\n".join(rows)).encode(),
        ),
    )
    stored = repr(w.uow.committed.job_items) + repr(w.uow.committed.job_failures)
    assert all(p.hex() not in stored and p not in stored.encode() for p in privates)
    await j.drain()
    done = await j.uc.queries.get(ADMIN, job.id)
    assert (done.succeeded_items, done.failed_items) == (5, 2)
    sealer: FakeSealer = w.sealer
    for p in privates:
        adv = FakeKeyPairFactory.derive(p)
        tracker = next(t for t in w.uow.committed.trackers.values() if t.advertisement_key == adv)
        assert tracker.sealed_private_key is not None
        assert sealer.unseal(tracker.sealed_private_key, adv.hashed) == p


async def test_reevaluation_queues_every_tracker_of_the_run(j: Jobs) -> None:
    w = j.w
    macs = await w.allocated(w.a, 6)
    await w.uc.import_trackers(ADMIN, w.run_a.id, macs)
    job = await j.uc.start_job(ADMIN, StartJobRequest(JobKind.REEVALUATE_RUN, w.run_a.id))
    assert job.total_items == 6
    await j.drain()
    queued = {t for t, since in w.uow.committed.processing_inbox.values()}
    assert len(queued) == 6
    assert {s for _, s in w.uow.committed.processing_inbox.values()} == {w.run_a.start_time}
